"""``flowvi report RUN... --out DIR``: Table 2 and Figure 4 (MNIST runs), Table 3 (CIFAR-10 runs, each row
"not run here" until one is given), sample / reconstruction grids; ``--update DOC`` pastes the MNIST sections into
DOC's report blocks (:mod:`flowvi_experiments.report.blocks`).

    flowvi report runs/* --out report/
    flowvi report results/mnist/* --out report/ --no-grids --update README.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .main import CLIError, writable_dir


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report",
        help="render Table 2, Figure 4, Table 3 and image grids from trained runs",
        description="Collect runs (config.yaml, summary.json, metrics.json) into report/table2.md, "
        "report/figure4.png (MNIST runs), report/table3.md (CIFAR-10 runs) and per-run sample and "
        "reconstruction grids.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run directories (non-run paths are skipped)")
    p.add_argument("--out", type=Path, default=Path("report"), help="output directory (default report/)")
    p.add_argument("--grids", action=argparse.BooleanOptionalAction, default=True,
                   help="draw sample and reconstruction grids (needs the checkpoints and the test data)")
    p.add_argument("--data-dir", default=None, help="dataset directory for the reconstruction grids")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample grids")
    p.add_argument("--update", type=Path, action="append", default=[], metavar="DOC",
                   help="a markdown file whose '<!-- flowvi report: NAME -->' blocks get the report's sections "
                   "(NAME: table2, ordering, planar-with-K, beside-planar, later-families, seeds, ablations, longer or "
                   "more-samples); "
                   "may be given several times")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data import DatasetError
    from ..evaluation import load_run_model
    from ..report import (
        SECTIONS,
        figure4,
        fill_blocks,
        image_grid,
        is_cifar,
        load_runs,
        report_sections,
        table3_markdown,
    )
    from ..training.checkpoint import write_text
    from ..training.data_source import DATA, load_split

    try:
        records = load_runs(args.runs)
    except ValueError as exc:  # a damaged config.yaml, summary.json or metrics.json
        raise CLIError(str(exc)) from None
    if not records:
        raise CLIError("none of the given paths is a run directory (with config.yaml)")
    mnist = [r for r in records if not is_cifar(r)]
    documents = {doc: _read_document(doc) for doc in args.update}  # every document checked before any work
    if documents and not mnist:
        raise CLIError("--update needs MNIST runs (the blocks hold Table 2 and its sections), and none of the "
                       "given runs is one; pass the MNIST run directories, e.g. results/mnist/*")
    writable_dir(args.out, "--out")
    parts = ["# flowvi report\n"]
    if mnist:
        try:  # a damaged or unsafe per-image file is a sentence
            sections = report_sections(mnist)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
        write_text(args.out / "table2.md", "# Table 2: binarized MNIST test set\n\n" + sections["table2"])
        for name, title in SECTIONS.items():
            if sections[name]:
                parts += [f"## {title}\n", sections[name]]
        if figure4(mnist, args.out / "figure4.png"):
            parts += ["## Figure 4\n", "![bound and -ln p(x) against K](figure4.png)\n"]
        for doc, text in documents.items():  # their blocks were checked by _read_document
            write_text(doc, fill_blocks(text, sections, where=str(doc)))
    table3 = table3_markdown(records)
    write_text(args.out / "table3.md", "# Table 3: CIFAR-10 test set\n\n" + table3)
    parts += ["## Table 3 (CIFAR-10)\n", table3]
    if args.grids:
        parts.append("## Samples and reconstructions\n")
        test_cache: dict[str, torch.Tensor] = {}
        for r in records:
            try:
                model, cfg, _ = load_run_model(r.path)
            except (FileNotFoundError, ValueError) as exc:
                parts.append(f"- {r.name}: no grids ({exc})\n")
                continue
            gen = torch.Generator().manual_seed(args.seed)
            shape = DATA[cfg.data].image_shape
            image_grid(model.sample(100, generator=gen), args.out / f"{r.name}-samples.png",
                       title=f"{r.label}: samples (pixel means)", image_shape=shape)
            try:
                key = f"{cfg.data}-{cfg.binarization}"
                if key not in test_cache:
                    test = load_split(cfg.binarization, "test", args.data_dir or cfg.data_dir, cfg.verify_data,
                                      dataset=cfg.data)
                    test_cache[key] = test[:50]
                x = test_cache[key]
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(args.seed)
                    recon = model.reconstruct(x)
                pairs = torch.stack([x, recon], 1).reshape(-1, x.shape[-1])  # data, reconstruction, ...
                image_grid(pairs, args.out / f"{r.name}-reconstructions.png",
                           title=f"{r.label}: test images and reconstructions", image_shape=shape)
                parts.append(f"- {r.name}: ![samples]({r.name}-samples.png) "
                             f"![reconstructions]({r.name}-reconstructions.png)\n")
            except DatasetError as exc:
                parts.append(f"- {r.name}: ![samples]({r.name}-samples.png) (no reconstructions: {exc})\n")
    write_text(args.out / "report.md", "\n".join(parts))
    print(f"report for {len(records)} run(s) written to {args.out}/ (report.md, table3.md"
          f"{', table2.md' if mnist else ''}"
          f"{', figure4.png' if (args.out / 'figure4.png').exists() else ''})"
          + "".join(f"; {doc}'s report blocks updated" for doc in documents))
    return 0


def _read_document(doc: Path) -> str:
    """The text of a document given to ``--update``, its blocks checked (:func:`fill_blocks` on no sections)."""
    from ..report import BlockError, fill_blocks

    try:
        text = doc.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise CLIError(f"--update {doc}: cannot read it ({reason}); give an existing markdown file") from None
    try:
        fill_blocks(text, {}, where=f"--update {doc}")
    except BlockError as exc:
        raise CLIError(str(exc)) from None
    return text
