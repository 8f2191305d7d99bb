"""Evaluation: importance-sampled ``−ln p(x)`` and the free energy with standard errors (section 6.2)."""

from .marginal import (
    PER_IMAGE_SUFFIX,
    MarginalEstimate,
    estimate_log_marginal,
    evaluation_chunk_size,
    read_per_image,
    standard_error,
    write_per_image,
)
from .run import load_run_model, selected_checkpoint

__all__ = [
    "PER_IMAGE_SUFFIX",
    "MarginalEstimate",
    "estimate_log_marginal",
    "evaluation_chunk_size",
    "load_run_model",
    "selected_checkpoint",
    "read_per_image",
    "standard_error",
    "write_per_image",
]
