"""The MNIST report: Table 2, Figure 4, sample and reconstruction grids (SPEC §6.2)."""

from .figures import figure4, figure4_budget, image_grid
from .runs import PAPER_TABLE2, RunRecord, load_run, load_runs, paper_value
from .table import (
    more_samples_markdown,
    ordering_markdown,
    paired_difference,
    planar_with_K_markdown,
    seeds_markdown,
    table2_markdown,
)

__all__ = ["PAPER_TABLE2", "RunRecord", "figure4", "figure4_budget", "image_grid", "load_run", "load_runs",
           "more_samples_markdown", "ordering_markdown", "paired_difference", "paper_value", "planar_with_K_markdown",
           "seeds_markdown", "table2_markdown"]
