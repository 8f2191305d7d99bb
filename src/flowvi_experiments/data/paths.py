"""Where the data files live: ``--data-dir``, else ``$FLOWVI_DATA_DIR``, else a cache default.

Below the data directory the layout is fixed (the same as ``shared/data``)::

    binarized_mnist/binarized_mnist_{train,valid,test}.amat[.gz]
    mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]
"""

from __future__ import annotations

import os
from pathlib import Path

#: environment variable naming the data directory when no explicit one is given
DATA_DIR_ENV = "FLOWVI_DATA_DIR"


def default_data_dir() -> Path:
    """The default data directory: ``$XDG_CACHE_HOME/flowvi/data``, else ``~/.cache/flowvi/data``."""
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache) if cache else Path.home() / ".cache"
    return base / "flowvi" / "data"


def resolve_data_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data directory: ``data_dir`` if given, else ``$FLOWVI_DATA_DIR`` if set and non-empty,
    else :func:`default_data_dir`. ``~`` is expanded; the directory need not exist yet.
    """
    if data_dir is None or str(data_dir) == "":
        env = os.environ.get(DATA_DIR_ENV, "")
        return Path(env).expanduser() if env else default_data_dir()
    return Path(data_dir).expanduser()
