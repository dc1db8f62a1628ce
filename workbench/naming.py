"""Names of scores and metrics: safe to type in a shell and to use in a file name.

Some names carry text from data (a treebank's relation labels). A name may only hold letters,
digits and `_ . : @ % + = -`; anything else (`>`, `|`, `[`, spaces, a `/`) becomes `_`, so that
`workbench show --score dep_to_head:nmod:poss` needs no quoting and `plot -o DIR` can write a file
of that name. The original text stays in the step's tables.
"""

from __future__ import annotations

import re

UNSAFE = re.compile(r"[^A-Za-z0-9_.:@%+=-]")


def safe_name(text: str) -> str:
    """`text` with every character a shell or a file system would treat specially replaced by `_`."""
    return UNSAFE.sub("_", text) or "_"


def is_safe_name(text: str) -> bool:
    return bool(text) and UNSAFE.search(text) is None
