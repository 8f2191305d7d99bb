"""``flowvi data``: download (``flowvi data download NAME``) and verify (``flowvi data verify
[NAME]``) the canonical datasets of the MNIST experiment and the CIFAR-10 archives; ``flowvi data
path`` prints the data directory (``--data-dir``, else ``$FLOWVI_DATA_DIR``, else ``~/.cache/flowvi/data``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping

from ..data import DATASETS, DEFAULT_BASE_URLS, DatasetError, cifar, resolve_data_dir
from ..data.download import download_dataset, verify_dataset
from ..data.registry import Datasets
from .main import CLIError, check_options, writable_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "data",
        help="download and verify the datasets",
        description="Download and verify the canonical datasets (sha256 of the decompressed files).",
    )
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    names = sorted(DATASETS) + sorted(cifar.ARCHIVES)

    download = actions.add_parser(
        "download",
        help="fetch a dataset's canonical files",
        description="Fetch the canonical files of NAME, verify their sha256 and write them atomically. "
        "Default sources: " + "; ".join(f"{k}: {v}" for k, v in DEFAULT_BASE_URLS.items())
        + f"; {', '.join(cifar.ARCHIVES)}: {cifar.BASE_URL} (md5 and sha256 of the archives)",
    )
    download.add_argument("name", metavar="NAME", choices=names, help=f"one of {', '.join(names)}")
    download.add_argument("--base-url", help="fetch from BASE_URL/<file name> instead of the public location")
    download.add_argument("--force", action="store_true", help="download even if a verified copy is there")
    download.add_argument(
        "--timeout", type=float, default=60.0, help="network timeout in seconds (default 60)"
    )
    _data_dir_option(download)
    download.set_defaults(func=run_download)

    verify = actions.add_parser(
        "verify",
        help="check the files in the data directory",
        description="Check size and sha256 of the files of NAME "
        "(default: every dataset that has files there).",
    )
    verify.add_argument("name", metavar="NAME", nargs="?", choices=names, help=f"one of {', '.join(names)}")
    _data_dir_option(verify)
    verify.set_defaults(func=run_verify)

    path = actions.add_parser("path", help="print the data directory in use")
    _data_dir_option(path)
    path.set_defaults(func=lambda args: print(resolve_data_dir(args.data_dir)) or 0)


def _data_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", help="data directory (default: $FLOWVI_DATA_DIR, else ~/.cache/flowvi/data)"
    )


def run_download(
    args: argparse.Namespace, datasets: Datasets = DATASETS, archives: Mapping[str, cifar.Archive] = cifar.ARCHIVES
) -> int:
    """``flowvi data download``: fetch ``args.name``, one of ``datasets`` (default: the canonical MNIST
    files) or ``archives`` (default: the official CIFAR-10 archives). Returns the exit status.

    Args:
        args: the parsed command line.
        datasets, archives: what the names stand for (another table: e.g. small files with their own
            checksums).
    """
    from .options import check_url

    check_options(args, ("timeout",))
    bad_url = check_url("--base-url", args.base_url)
    if bad_url:
        raise CLIError(bad_url)
    writable_dir(resolve_data_dir(args.data_dir), "--data-dir")  # before the network
    from .main import sigterm_as_interrupt

    try:
        with sigterm_as_interrupt():  # a kill ends like Ctrl-C: the .part file is removed
            options = dict(base_url=args.base_url, force=args.force, timeout=args.timeout,
                           progress=sys.stderr.isatty())
            if args.name in archives:
                cifar.download_archive_dataset(args.name, args.data_dir, archives=archives, **options)
            else:
                download_dataset(args.name, args.data_dir, datasets=datasets, **options)
    except DatasetError as exc:
        raise CLIError(str(exc)) from exc
    except KeyboardInterrupt:
        print("flowvi data download: interrupted; no partial file was left", file=sys.stderr)
        return 130
    return 0


def run_verify(
    args: argparse.Namespace, datasets: Datasets = DATASETS, archives: Mapping[str, cifar.Archive] = cifar.ARCHIVES
) -> int:
    """``flowvi data verify [NAME]``: check ``args.name`` (default: every name of ``datasets`` and
    ``archives`` with files in the data directory). Returns the exit status (1 if a check failed).

    Args:
        args: the parsed command line.
        datasets, archives: as in :func:`run_download`.
    """
    root = resolve_data_dir(args.data_dir)
    print(f"data directory: {root}")
    failed = False
    checked = 0
    for name in [args.name] if args.name else sorted(datasets) + sorted(archives):
        if name in archives:
            statuses = cifar.verify_archive_dataset(name, root, archives)
        else:
            statuses = verify_dataset(name, root, datasets)
        if not args.name and all(s.path is None for s in statuses):
            print(f"{name}: not downloaded (flowvi data download {name})")
            continue
        checked += 1
        for status in statuses:
            print(("ok      " if status.ok else "FAILED  ") + status.message)
        if not all(s.ok for s in statuses):
            failed = True
            print(f"{name}: FAILED; fix with `flowvi data download {name} --data-dir {root}`")
        else:
            print(f"{name}: ok")
    if checked == 0:
        raise CLIError(f"no dataset found in {root}; get one with `flowvi data download NAME`")
    return 1 if failed else 0
