"""Tokenize once, then batch with dynamic padding.

Batches are padded to their own longest example, not to max_length; sorting examples by length
before cutting batches keeps the padding small. Every batch carries the indices of its examples
so per-example outputs land back in dataset order.

Tokenisations persist. In a run (`LoadedDataset.tokenised_dir` set: the store's cache/tokenised)
a dataset's texts are tokenised, a thousand at a time, into one Arrow file (pyarrow) per

    (texts' content, tokenizer fingerprint, max_length, token types)

and read back memory-mapped: a second step, a second run and every rank of a distributed run
share one tokenisation, and the token ids never become Python lists of the whole dataset
(`TokenRows` hands out one example at a time; `Encodings.lengths` is a numpy array made from the
Arrow offsets). The key is the texts' content, not the recipe's dataset fingerprint: two
datasets with the same texts (another label column, another recipe) share a file, and texts
that change under an unchanged spec (an unresolved hub revision, a generator that changed) never
read a stale one. A lock file (workbench/processes.py) lets one process tokenise while the others
wait; the file is written under a temporary name and renamed into place, so a reader sees
a whole file or none, and a lock that is lost or broken costs a tokenisation done twice, never a
wrong one. Outside a run (`tokenised_dir` None) texts are tokenised in memory, as plain lists.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import weakref
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

TOKENISED_FORMAT = 1  # bump when the file's layout or what goes into it changes
MAP_BATCH_SIZE = 1000  # examples per tokenizer call
WRITER_BATCH_SIZE = 10_000  # examples per Arrow record batch in the file
LOCK_WAIT_S = 3600.0  # how long a process waits for another that is tokenising the same texts
LEFTOVER_AGE_S = 3600.0  # a temporary file this old was left by a killed process


class TokenRows(Sequence):
    """Token ids of every example in an Arrow list column (memory-mapped): `rows[i]` is a list of ints.

    `row(i)` is the same example as a read-only numpy view into the file, without a copy.
    """

    def __init__(self, column: Any):  # a pyarrow ChunkedArray of list<int32>
        chunks = [chunk for chunk in column.chunks if len(chunk)]
        # ListArray.offsets honours the chunk's own slice offset; .values is the whole buffer they index
        self._offsets = [_numpy_view(chunk.offsets) for chunk in chunks]
        self._values = [_numpy_view(chunk.values) for chunk in chunks]
        self._starts = np.cumsum([0] + [len(chunk) for chunk in chunks])
        self._column = column  # keeps the memory map alive

    def __len__(self) -> int:
        return int(self._starts[-1])

    def row(self, index: int) -> np.ndarray:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"example {index} of {len(self)}")
        chunk = int(np.searchsorted(self._starts, index, side="right")) - 1
        offsets = self._offsets[chunk]
        local = index - int(self._starts[chunk])
        return self._values[chunk][offsets[local] : offsets[local + 1]]

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.row(i).tolist() for i in range(*index.indices(len(self)))]
        return self.row(int(index)).tolist()

    def __iter__(self) -> Iterator[list[int]]:
        for values, offsets in zip(self._values, self._offsets):
            for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
                yield values[start:end].tolist()

    def lengths(self) -> np.ndarray:
        if not self._offsets:
            return np.zeros(0, dtype=np.int64)
        return np.concatenate([np.diff(offsets).astype(np.int64) for offsets in self._offsets])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (TokenRows, list, tuple)):
            return len(self) == len(other) and all(a == list(b) for a, b in zip(self, other))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TokenRows({len(self)} examples)"


@dataclass
class Encodings:
    """Token ids of every example, unpadded: lists of lists in memory, or `TokenRows` from an Arrow file."""

    input_ids: Sequence[Sequence[int]]
    token_type_ids: Sequence[Sequence[int]] | None
    pad_token_id: int
    max_length: int  # the truncation length they were encoded with
    path: Path | None = None  # the Arrow file they were read from, if any
    _lengths: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per example, [examples] int64 (computed once)."""
        if self._lengths is None:
            if isinstance(self.input_ids, TokenRows):
                self._lengths = self.input_ids.lengths()
            else:
                self._lengths = np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))
        return self._lengths

    @property
    def num_tokens(self) -> int:
        return int(self.lengths.sum())

    def ids(self, index: int) -> Sequence[int]:
        """One example's token ids: a list, or a numpy view into the Arrow file (no copy)."""
        return _row(self.input_ids, index)

    def types(self, index: int) -> Sequence[int]:
        return _row(self.token_type_ids, index)  # type: ignore[arg-type]


def _numpy_view(array: Any) -> np.ndarray:
    """A null-free Arrow integer array as a read-only numpy view of its buffer (Array.to_numpy would import pandas)."""
    dtype = np.dtype(array.type.to_pandas_dtype())
    buffer = array.buffers()[1]
    if buffer is None or len(array) == 0:
        return np.zeros(0, dtype=dtype)
    data = np.frombuffer(buffer, dtype=dtype)
    return data[array.offset : array.offset + len(array)]


def _row(rows: Sequence[Sequence[int]], index: int) -> Sequence[int]:
    return rows.row(index) if isinstance(rows, TokenRows) else rows[index]


@dataclass
class Batch:
    indices: torch.Tensor  # [batch] positions of the examples in the dataset
    input_ids: torch.Tensor  # [batch, seq]
    attention_mask: torch.Tensor  # [batch, seq], 1 = real token
    token_type_ids: torch.Tensor | None  # [batch, seq]

    def model_inputs(self) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": self.input_ids, "attention_mask": self.attention_mask}
        if self.token_type_ids is not None:
            inputs["token_type_ids"] = self.token_type_ids
        return inputs

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def encode_texts(tokenizer: object, texts: list[tuple[str, ...]], max_length: int, *, token_types: bool) -> Encodings:
    """Tokenize single texts or sentence pairs (truncating the longer side of a pair first).

    `token_types`: whether the model has segment embeddings (`LoadedModel.uses_token_types`). Only
    then do sentence pairs carry token type ids; a model without them (GPT-2 adds `wte(type)` to
    every token it is given a type for) gets none.
    """
    if not texts:
        return Encodings([], None, tokenizer.pad_token_id, max_length)  # type: ignore[attr-defined]
    pairs = len(texts[0]) == 2
    first = [text[0] for text in texts]
    second = [text[1] for text in texts] if pairs else None
    with_types = pairs and token_types
    encoded = _tokenize(tokenizer, first, second, max_length, with_types)
    token_types = encoded.get("token_type_ids") if with_types else None
    return Encodings(list(encoded["input_ids"]), token_types, tokenizer.pad_token_id, max_length)  # type: ignore[attr-defined,arg-type]


def _tokenize(tokenizer: object, first: list[str], second: list[str] | None, max_length: int, with_types: bool) -> Any:
    """The one tokenizer call both paths make (in memory and into the Arrow file): same ids either way."""
    return tokenizer(  # type: ignore[operator]
        first,
        second,
        truncation="longest_first" if second is not None else True,
        max_length=max_length,
        padding=False,
        return_token_type_ids=with_types,
        return_attention_mask=False,
    )


def encode_dataset(tokenizer: object, dataset: object, *, token_types: bool) -> Encodings:
    """A text dataset's examples tokenised, once per tokenizer, max_length and token types.

    In a run (`dataset.tokenised_dir` set) the tokenisation is an Arrow file shared by every step,
    run and process (the module docstring says how); otherwise it is kept in memory for the run.
    """
    columns = dataset.spec.text_columns  # type: ignore[attr-defined]
    token_types = token_types and len(columns) == 2  # only pairs get types
    key = (tokenizer_fingerprint(tokenizer), dataset.spec.max_length, token_types)  # type: ignore[attr-defined]
    cache = dataset.encoded  # type: ignore[attr-defined]
    if key not in cache:
        folder = getattr(dataset, "tokenised_dir", None)
        if folder is not None and len(dataset):  # type: ignore[arg-type]
            texts = [dataset.columns[name] for name in columns]  # type: ignore[attr-defined]
            try:
                cache[key] = tokenise_to_arrow(tokenizer, texts, dataset.spec.max_length, token_types, Path(folder), key[0])  # type: ignore[attr-defined]
            except OSError as error:  # a full disk, a read-only store: the file only saves time
                logger.warning("dataset '%s': tokenised in memory; the tokenisation could not be kept in %s (%s)",
                               dataset.name, folder, error)  # type: ignore[attr-defined]
        if key not in cache:
            cache[key] = encode_texts(tokenizer, dataset.texts(), dataset.spec.max_length, token_types=token_types)  # type: ignore[attr-defined]
    return cache[key]


def tokenised_key(texts: list[Sequence[str]], tokenizer_key: str, max_length: int, token_types: bool) -> str:
    """The name of a tokenisation: a hash of the texts' content and of how they are tokenised."""
    digest = hashlib.sha256(f"tokenised/{TOKENISED_FORMAT}|{tokenizer_key}|{max_length}|{token_types}|{len(texts)}".encode())
    for column in texts:
        # lengths first, then the texts joined: unambiguous whatever characters the texts hold
        digest.update(array("q", map(len, column)).tobytes())
        digest.update("\0".join(column).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def tokenise_to_arrow(
    tokenizer: object, texts: list[Sequence[str]], max_length: int, token_types: bool, folder: Path, tokenizer_key: str | None = None
) -> Encodings:
    """Texts (one column, or two for pairs) tokenised into `folder`/<key>.arrow, or read from it if there.

    Several processes may ask at once: one takes the lock and tokenises, the others wait for the
    file and read it; a holder that died is noticed (its lock is broken) and the work redone.
    """
    tokenizer_key = tokenizer_key or tokenizer_fingerprint(tokenizer)
    key = tokenised_key(texts, tokenizer_key, max_length, token_types)
    path = folder / f"{key}.arrow"
    rows = len(texts[0])
    found = _read_tokenised(path, rows, token_types)
    if found is not None:
        return _encodings(found, tokenizer, max_length, path, token_types)
    from workbench.processes import LockFile

    folder.mkdir(parents=True, exist_ok=True)
    lock = LockFile(folder / f"{key}.lock")
    waited_until = time.monotonic() + LOCK_WAIT_S
    while True:
        holder = lock.acquire()
        if holder is None:
            break
        found = _read_tokenised(path, rows, token_types)  # the holder may have finished meanwhile
        if found is not None:
            return _encodings(found, tokenizer, max_length, path, token_types)
        if time.monotonic() > waited_until:
            break  # a holder on another host that never finishes: do it ourselves (the rename keeps it safe)
        time.sleep(0.05)
    try:
        found = _read_tokenised(path, rows, token_types)
        if found is None:
            _sweep_leftovers(folder)
            found = _write_tokenised(tokenizer, texts, max_length, token_types, path, key)
    finally:
        lock.release()
    return _encodings(found, tokenizer, max_length, path, token_types)


def _encodings(table: Any, tokenizer: object, max_length: int, path: Path, token_types: bool) -> Encodings:
    ids = TokenRows(table.column("input_ids"))
    types = TokenRows(table.column("token_type_ids")) if token_types else None
    return Encodings(ids, types, tokenizer.pad_token_id, max_length, path=path)  # type: ignore[attr-defined]


def _read_tokenised(path: Path, rows: int, token_types: bool) -> Any:
    """The file's Arrow table, memory-mapped; None if there is none or it is not a whole tokenisation."""
    import pyarrow as pa

    try:  # an Arrow IPC stream (as datasets.map wrote them too); reading it is a memory map, no copy
        table = pa.ipc.open_stream(pa.memory_map(str(path))).read_all()
    except FileNotFoundError:
        return None
    except (OSError, pa.ArrowException):  # a damaged file: it is rewritten
        return None
    wanted = ["input_ids", "token_type_ids"] if token_types else ["input_ids"]
    if table.num_rows != rows or table.column_names != wanted:
        return None
    for name in wanted:  # lists of integers without gaps, as _write_tokenised makes them
        kind = table.schema.field(name).type
        if not pa.types.is_list(kind) or not pa.types.is_integer(kind.value_type) or table.column(name).null_count:
            return None
    return table


def _write_tokenised(tokenizer: object, texts: list[Sequence[str]], max_length: int, token_types: bool, path: Path, key: str) -> Any:
    """Tokenise MAP_BATCH_SIZE examples at a time into an Arrow IPC stream (list<int32> ids, list<int8> types),
    written as tmp<key>... beside `path` and renamed into place: a reader sees a whole file or none.

    pyarrow alone (no `datasets`: importing it costs a fresh run half a second, issue 14); the layout is
    the one datasets.map wrote, so files written by earlier versions read the same."""
    import os
    import tempfile

    import pyarrow as pa

    fields = [pa.field("input_ids", pa.list_(pa.int32()))]
    if token_types:
        fields.append(pa.field("token_type_ids", pa.list_(pa.int8())))
    schema = pa.schema(fields)
    handle, temporary = tempfile.mkstemp(prefix=f"tmp{key[:16]}", suffix=".arrow", dir=path.parent)
    os.close(handle)
    try:
        with pa.OSFile(temporary, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
            pending: list[pa.RecordBatch] = []
            for start in range(0, len(texts[0]), MAP_BATCH_SIZE):
                first = list(texts[0][start : start + MAP_BATCH_SIZE])
                second = list(texts[1][start : start + MAP_BATCH_SIZE]) if len(texts) > 1 else None
                encoded = _tokenize(tokenizer, first, second, max_length, token_types)
                arrays = [_list_array(encoded[field.name], field.type) for field in fields]
                pending.append(pa.record_batch(arrays, schema=schema))
                if sum(batch.num_rows for batch in pending) >= WRITER_BATCH_SIZE:
                    writer.write_table(pa.Table.from_batches(pending, schema=schema).combine_chunks())
                    pending = []
            if pending:
                writer.write_table(pa.Table.from_batches(pending, schema=schema).combine_chunks())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    table = _read_tokenised(path, len(texts[0]), token_types)
    if table is None:
        raise OSError(f"the tokenisation written to {path} cannot be read back")
    return table


def _list_array(rows: list[list[int]], kind: Any) -> Any:
    """rows as an Arrow list array of `kind`, built from numpy buffers (pa.array would import pandas)."""
    import itertools

    import pyarrow as pa

    values_type = kind.value_type
    lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    values = np.fromiter(itertools.chain.from_iterable(rows), dtype=values_type.to_pandas_dtype(), count=total)
    children = pa.Array.from_buffers(values_type, total, [None, pa.py_buffer(values)])
    return pa.Array.from_buffers(kind, len(rows), [None, pa.py_buffer(offsets)], children=[children])


def _sweep_leftovers(folder: Path) -> None:
    """Delete temporary files that a killed process left (they are named tmp*)."""
    now = time.time()
    for leftover in folder.glob("tmp*"):
        try:
            if now - leftover.stat().st_mtime > LEFTOVER_AGE_S:
                leftover.unlink()
        except OSError:
            pass


_FINGERPRINTS: "weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], str]]" = weakref.WeakKeyDictionary()


def tokenizer_fingerprint(tokenizer: object) -> str:
    """What the tokenizer does, not where it was loaded from: a fine-tuned model's copy is the same.

    Serialising a tokenizer takes milliseconds, as long as reading a small dataset's tokenisation
    back; so it is done once per tokenizer object, again only if its vocabulary size or padding
    and truncation settings change.
    """
    state = (
        len(tokenizer) if hasattr(tokenizer, "__len__") else None,  # type: ignore[arg-type]  # counts added tokens
        getattr(tokenizer, "pad_token_id", None),
        getattr(tokenizer, "padding_side", None),
        getattr(tokenizer, "truncation_side", None),  # which end truncation cuts
    )
    try:
        known = _FINGERPRINTS.get(tokenizer)
    except TypeError:  # not weakly referenceable or hashable
        known = None
    if known is not None and known[0] == state:
        return known[1]
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))  # type: ignore[attr-defined]
    extra = "|".join(str(value) for value in state[1:])
    fingerprint = hashlib.sha256((text + extra).encode()).hexdigest()
    try:
        _FINGERPRINTS[tokenizer] = (state, fingerprint)
    except TypeError:
        pass
    return fingerprint


def batch_order(
    lengths: Sequence[int], batch_size: int, *, order: str = "length", seed: int = 0
) -> list[list[int]]:
    """Example indices cut into batches.

    order="length": sorted by length (least padding; for inference);
    order="shuffle": random batches of similar length (training: shuffled buckets, then shuffled batches);
    order="sequential": dataset order.
    """
    sizes = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if order == "length":  # longest first, ties in dataset order (a stable sort)
        indices = np.argsort(-sizes, kind="stable").tolist()
    elif order == "shuffle":
        indices = list(range(len(sizes)))
        rng = random.Random(seed)
        rng.shuffle(indices)
        bucket = batch_size * 50
        shuffled = np.asarray(indices, dtype=np.int64)
        indices = []
        for start in range(0, len(shuffled), bucket):
            members = shuffled[start : start + bucket]
            indices += members[np.argsort(sizes[members], kind="stable")].tolist()
    elif order == "sequential":
        indices = list(range(len(sizes)))
    else:
        raise ValueError(f"unknown batch order '{order}'")
    batches = [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]
    if order == "shuffle":
        random.Random(seed + 1).shuffle(batches)
    return batches


def collate(
    encodings: Encodings,
    indices: list[int],
    device: torch.device | str = "cpu",
    pad_to: int | None = None,
) -> Batch:
    """Pad the chosen examples to their longest (or to `pad_to`, for a fixed-length baseline)."""
    rows = [encodings.ids(i) for i in indices]
    width = pad_to or max(len(ids) for ids in rows)
    input_ids = np.full((len(indices), width), encodings.pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(indices), width), dtype=np.int64)
    with_types = encodings.token_type_ids is not None and len(encodings.token_type_ids) > 0
    token_types = np.zeros((len(indices), width), dtype=np.int64) if with_types else None
    for row, (index, ids) in enumerate(zip(indices, rows)):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        if token_types is not None:
            token_types[row, : len(ids)] = encodings.types(index)
    return Batch(
        indices=torch.tensor(indices),
        input_ids=torch.from_numpy(input_ids).to(device),
        attention_mask=torch.from_numpy(attention_mask).to(device),
        token_type_ids=torch.from_numpy(token_types).to(device) if token_types is not None else None,
    )
