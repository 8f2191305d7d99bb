"""The paper's experiments, built on top of the library (the library never imports this package)."""

from . import infinitesimal  # noqa: E402,F401  (registers the ``hvi`` flow in the energy registry)
