"""Evaluation: importance-sampled ``−ln p(x)`` and the free energy with standard errors (section 6.2)."""

from .marginal import MarginalEstimate, estimate_log_marginal, standard_error
from .run import load_run_model

__all__ = ["MarginalEstimate", "estimate_log_marginal", "load_run_model", "standard_error"]
