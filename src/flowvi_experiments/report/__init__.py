"""The report: Table 2 and Figure 4 (MNIST), Table 3 (CIFAR-10), sample and reconstruction grids."""

from .figures import figure4, figure4_budget, image_grid, plot_figure4
from .runs import PAPER_TABLE2, RunRecord, load_run, load_runs, paper_value
from .table import (
    ablation_pairs,
    ablations_markdown,
    more_samples_markdown,
    ordering_markdown,
    paired_difference,
    planar_with_K_markdown,
    seeds_markdown,
    table2_markdown,
)
from .table3 import PAPER_TABLE3, is_cifar, table3_markdown

__all__ = ["PAPER_TABLE2", "PAPER_TABLE3", "RunRecord", "ablation_pairs", "ablations_markdown", "figure4",
           "figure4_budget", "image_grid", "is_cifar", "load_run", "load_runs", "more_samples_markdown",
           "ordering_markdown", "paired_difference", "paper_value", "planar_with_K_markdown", "plot_figure4",
           "seeds_markdown", "table2_markdown", "table3_markdown"]
