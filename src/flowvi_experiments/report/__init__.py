"""The MNIST report: Table 2, Figure 4, sample and reconstruction grids (section 6.2)."""

from .figures import figure4, image_grid
from .runs import PAPER_TABLE2, RunRecord, load_run, load_runs, paper_value
from .table import ordering_markdown, paired_difference, table2_markdown

__all__ = ["PAPER_TABLE2", "RunRecord", "figure4", "image_grid", "load_run", "load_runs", "ordering_markdown",
           "paired_difference", "paper_value", "table2_markdown"]
