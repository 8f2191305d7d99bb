"""The paper's experiments, built on top of the library (the library never imports this package)."""
