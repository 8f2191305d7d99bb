"""The report's sections pasted into a markdown document (the README, a docs page) between markers, so that every
number the document quotes from a table is the report's rendering of the committed results.

A block is a pair of HTML comments, invisible when the page is rendered, around what the report writes::

    <!-- flowvi report: table2 -->
    | model | test F(x) (ours) | ...
    <!-- /flowvi report: table2 -->

``flowvi report results/mnist/* --out report/ --update README.md`` replaces the text between each pair with the
section of that name (:data:`SECTIONS` lists them); the rest of the document is kept byte for byte.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

#: the report's MNIST sections a block may name, in the report's order, with their titles in report.md
SECTIONS = {"table2": "Table 2", "ordering": "Table 2's ordering, diagonal > NICE > planar",
            "planar-with-K": "Planar flows improving with K",
            "beside-planar": "Later families beside planar flows",
            "later-families": "Later families among themselves", "seeds": "Several seeds", "ablations": "Ablations",
            "longer": "Longer training", "more-samples": "More importance samples"}

_BLOCK = re.compile(r"(<!-- flowvi report: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /flowvi report: (?P=name) -->)",
                    re.DOTALL)
_OPEN = re.compile(r"<!-- flowvi report: ([\w-]+) -->")


class BlockError(ValueError):
    """A document whose report blocks cannot be filled: unknown section, unclosed block, no block at all."""


def fill_blocks(text: str, sections: Mapping[str, str], where: str = "the document") -> str:
    """``text`` with the body of every report block replaced by ``sections[name]`` (a section the runs do not
    have, e.g. ablations of runs with none, leaves an empty block).

    Raises :class:`BlockError` (one sentence) for a block that names no section of :data:`SECTIONS`, an opening
    marker without its closing one, or a document without any block.
    """
    opened = _OPEN.findall(text)
    if not opened:
        raise BlockError(f"{where} has no report block; mark where a section goes with "
                         "'<!-- flowvi report: NAME -->' and '<!-- /flowvi report: NAME -->' on lines of their own "
                         f"(NAME one of {', '.join(SECTIONS)})")
    unknown = [n for n in opened if n not in SECTIONS]
    if unknown:
        raise BlockError(f"{where} has a report block '{unknown[0]}' that names no section; use one of "
                         f"{', '.join(SECTIONS)}")
    closed = [m.group("name") for m in _BLOCK.finditer(text)]
    if len(closed) != len(opened):
        missing = next(n for n in opened if opened.count(n) != closed.count(n))
        raise BlockError(f"{where} opens the report block '{missing}' without closing it; add "
                         f"'<!-- /flowvi report: {missing} -->' on a line of its own after it")

    def body(m: re.Match[str]) -> str:
        section = sections.get(m.group("name"), "")
        if section and not section.endswith("\n"):
            section += "\n"
        return m.group(1) + section + m.group(4)

    return _BLOCK.sub(body, text)
