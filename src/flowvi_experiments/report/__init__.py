"""The report: Table 2 and Figure 4 (MNIST), Table 3 (CIFAR-10), sample and reconstruction grids."""

from .blocks import SECTIONS, BlockError, fill_blocks
from .figures import figure4, figure4_budget, image_grid, plot_figure4
from .runs import PAPER_TABLE2, RunRecord, load_run, load_runs, paper_value
from .table import (
    ablation_pairs,
    ablations_markdown,
    beside_planar_markdown,
    later_families_markdown,
    longer_markdown,
    longer_pairs,
    main_runs,
    more_samples_markdown,
    ordering_markdown,
    paired_difference,
    planar_with_K_markdown,
    report_sections,
    seeds_markdown,
    table2_markdown,
)
from .table3 import PAPER_TABLE3, is_cifar, table3_markdown

__all__ = [
    "BlockError",
    "PAPER_TABLE2",
    "PAPER_TABLE3",
    "RunRecord",
    "SECTIONS",
    "ablation_pairs",
    "ablations_markdown",
    "beside_planar_markdown",
    "figure4",
    "figure4_budget",
    "fill_blocks",
    "image_grid",
    "is_cifar",
    "later_families_markdown",
    "load_run",
    "load_runs",
    "longer_markdown",
    "longer_pairs",
    "main_runs",
    "more_samples_markdown",
    "ordering_markdown",
    "paired_difference",
    "paper_value",
    "planar_with_K_markdown",
    "plot_figure4",
    "report_sections",
    "seeds_markdown",
    "table2_markdown",
    "table3_markdown",
]
