"""Dependency treebanks in CoNLL-U (Universal Dependencies), read with the `conllu` package.

A sentence keeps its syntactic words only: multiword token lines (`3-4  don't`) give way to the
words they contain (`do`, `n't`), and empty nodes of enhanced graphs (`5.1`) are dropped. Word ids
in a basic tree are then exactly 1..n, so heads index the word list directly (0 is the root).

The file is streamed one sentence block at a time, so the 14 MB EWT training file is never read
whole; every block is parsed by `conllu` and checked, and any problem is reported at the
`file:line` of the offending line, naming the column but never quoting the line (messages reach
logs and the store; the data stays in the file). (`conllu.parse_incr` splits blocks the same way but cannot say
on which line a problem lies, hence the small block reader here.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import conllu
from conllu.exceptions import ParseException

from workbench.data.files import FileProblem, decoded_lines
from workbench.errors import DataError

_COLUMNS = 10  # ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC


def universal_relation(deprel: str) -> str:
    """The universal part of a relation, without its language-specific subtype: `nsubj:pass` -> `nsubj`."""
    return deprel.split(":", 1)[0]


@dataclass(frozen=True)
class DependencySentence:
    """One sentence of a treebank; all lists are indexed by word (0-based)."""

    sent_id: str
    words: list[str]
    upos: list[str]
    xpos: list[str]
    heads: list[int]  # 0 = root, else the 1-based index of the head word
    deprels: list[str]  # full relation, subtype included ("nsubj:pass")
    text: str

    def __len__(self) -> int:
        return len(self.words)

    @property
    def universal_deprels(self) -> list[str]:
        """The relations without subtype (`nsubj:pass` -> `nsubj`)."""
        return [universal_relation(deprel) for deprel in self.deprels]


def read_conllu(path: str | Path, limit: int | None = None) -> list[DependencySentence]:
    """Read up to `limit` sentences of a CoNLL-U file.

    Raises DataError naming the file (and line, for malformed content) when the file is missing
    or cannot be understood.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such CoNLL-U file")
    sentences: list[DependencySentence] = []
    if limit is not None and limit <= 0:
        return sentences
    try:
        for first_line, lines in _blocks(text for _, text in decoded_lines(path, "utf-8")):
            sentence = _sentence(path, first_line, lines)
            if sentence is not None:
                sentences.append(sentence)
            if limit is not None and len(sentences) >= limit:
                break
    except FileProblem as problem:  # bytes that are not UTF-8, at their line and byte offset
        raise DataError(f"{path}:{problem.line}: {problem.message}") from None
    return sentences


def _blocks(handle: Iterable[str]) -> Iterator[tuple[int, list[str]]]:
    """(1-based number of the block's first line, its lines) for each blank-line separated block."""
    lines: list[str] = []
    first_line = 0
    for number, line in enumerate(handle, start=1):
        if line.strip():
            if not lines:
                first_line = number
            lines.append(line.rstrip("\r\n"))
        elif lines:
            yield first_line, lines
            lines = []
    if lines:
        yield first_line, lines


def _sentence(path: Path, first_line: int, lines: list[str]) -> DependencySentence | None:
    """Parse and check one block; None for a block of comments only."""
    parsed = _parse_block(path, first_line, lines)
    if not parsed:
        return None
    token_lines = [first_line + offset for offset, line in enumerate(lines) if not line.startswith("#")]
    for line, token in zip(token_lines, parsed):
        if token["id"] is None:
            raise DataError(f"{path}:{line}: a token line needs an id (a number, a range such as 3-4, or 5.1)")
    words = [(line, token) for line, token in zip(token_lines, parsed) if isinstance(token["id"], int)]
    for position, (line, token) in enumerate(words, start=1):
        where = f"{path}:{line}"
        if token["id"] != position:
            raise DataError(f"{where}: word id {token['id']} is out of order, expected {position}")
        head = token["head"]
        if head is None or not 0 <= head <= len(words):
            raise DataError(f"{where}: head {head!r} is neither 0 nor a word id of this sentence (1..{len(words)})")
        if token["deprel"] in (None, "", "_"):
            raise DataError(f"{where}: word {position} has no dependency relation")

    return DependencySentence(
        sent_id=parsed.metadata.get("sent_id") or f"{path.name}:{first_line}",
        words=[token["form"] for _, token in words],
        upos=[token["upos"] for _, token in words],
        xpos=[token["xpos"] or "_" for _, token in words],
        heads=[token["head"] for _, token in words],
        deprels=[token["deprel"] for _, token in words],
        text=parsed.metadata.get("text") or _surface_text(parsed),
    )


def _parse_block(path: Path, first_line: int, lines: list[str]) -> conllu.TokenList:
    """`conllu`'s parse of one block, its errors turned into DataError at the offending line."""
    for offset, line in enumerate(lines):
        if not line.startswith("#") and line.count("\t") != _COLUMNS - 1:
            found = line.count("\t") + 1
            raise DataError(f"{path}:{first_line + offset}: expected {_COLUMNS} tab-separated columns, found {found}")
    try:
        return conllu.parse_token_and_metadata("\n".join(lines))
    except ParseException as error:
        bad = next((offset for offset, line in enumerate(lines) if not _parses(line)), 0)
        raise DataError(f"{path}:{first_line + bad}: {_without_values(error)}") from None


def _without_values(error: ParseException) -> str:
    """`conllu`'s message minus the value it quotes: messages name columns, never the data."""
    match = re.match(r"Failed parsing field '(\w+)'", str(error))
    if match:
        return f"the {match[1]} field is not a valid {_FIELD_KINDS.get(match[1], 'value')}"
    return "not a valid CoNLL-U token line"


_FIELD_KINDS = {
    "id": "ID (a number, a range such as 3-4, or 5.1)",
    "head": "word id (an integer)",
    "deps": "list of head:relation pairs",
}


def _parses(line: str) -> bool:
    try:
        conllu.parse_token_and_metadata(line)
    except ParseException:
        return False
    return True


def _surface_text(tokens: conllu.TokenList) -> str:
    """Rebuild the sentence text from its surface tokens (multiword forms, SpaceAfter=No)."""
    parts: list[str] = []
    covered_until = 0  # last word id inside a multiword token already written
    for token in tokens:
        token_id = token["id"]
        if isinstance(token_id, tuple) and token_id[1] == "-":
            covered_until = token_id[2]
        elif not isinstance(token_id, int) or token_id <= covered_until:
            continue
        misc = token["misc"] or {}
        parts.append(token["form"] + ("" if misc.get("SpaceAfter") == "No" else " "))
    return "".join(parts).rstrip()
