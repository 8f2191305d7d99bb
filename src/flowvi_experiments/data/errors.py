"""The one exception of :mod:`flowvi_experiments.data`."""

from __future__ import annotations


class DatasetError(Exception):
    """A data file is missing, truncated, corrupt or malformed, or could not be downloaded.

    The message names the file, says what was expected (size, sha256 or format) and how to
    get a good copy (``flowvi data download NAME`` or where to put the file).
    """
