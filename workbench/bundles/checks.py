"""Is a member what its name says? Safetensors headers, JSON, text: checked on bytes, never loaded.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw bytes. The header is checked completely (ranges inside
the file, sizes that match dtype x shape, no overlaps), so a pickle, a zip (torch.save) or random
bytes renamed `.safetensors` is refused before any reader library sees it.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any

from workbench.bundles.layout import BundleError

MAX_HEADER_BYTES = 100 * 1024**2  # safetensors' own limit
DTYPE_BYTES = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8,
}


def sniff(head: bytes) -> str | None:
    """What a file that should be JSON or safetensors is instead, when that is recognisable."""
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle"
    if head[:4] == b"PK\x03\x04":
        return "a zip archive (torch.save writes pickles in one)"
    if head[:2] == b"\x93N" and head[2:6] == b"UMPY":
        return "a numpy .npy file (it may hold pickles)"
    return None


def safetensors_header_length(head: bytes, size: int, member: str) -> int:
    """The header's length from the first 8 bytes; BundleError unless it fits the file."""
    if size < 8 or len(head) < 8:
        raise BundleError(f"bundle member {member} is not a safetensors file ({_what(head, 'too short')})")
    (length,) = struct.unpack("<Q", head[:8])
    if length < 2 or length > MAX_HEADER_BYTES or length > size - 8:
        raise BundleError(f"bundle member {member} is not a safetensors file ({_what(head, 'its header length does not fit')})")
    return length


def check_safetensors(head: bytes, size: int, member: str) -> dict[str, Any]:
    """The tensors' header entries (name -> dtype, shape, data_offsets), after checking them all.

    `head`: at least the first 8 + header-length bytes of a file of `size` bytes.
    """
    length = safetensors_header_length(head, size, member)
    raw = head[8 : 8 + length]
    if len(raw) < length:
        raise BundleError(f"bundle member {member} is not a safetensors file (its header is cut short)")
    try:
        header = json.loads(raw.decode("utf-8").rstrip(" "))
    except (UnicodeDecodeError, ValueError):
        raise BundleError(f"bundle member {member} is not a safetensors file ({_what(head, 'its header is not JSON')})") from None
    if not isinstance(header, dict):
        raise BundleError(f"bundle member {member} is not a safetensors file (its header is not a JSON object)")
    data_bytes = size - 8 - length
    ranges = []
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            if not isinstance(info, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in info.items()):
                raise BundleError(f"bundle member {member}: safetensors __metadata__ must map text to text")
            continue
        ranges.append(_tensor_range(name, info, member, data_bytes))
        tensors[name] = info
    position = 0
    for start, end in sorted(ranges):  # tensors tile the data without overlapping, as safetensors requires
        if start != position:
            raise BundleError(f"bundle member {member}: safetensors tensors overlap or leave gaps")
        position = end
    if position != data_bytes:
        raise BundleError(f"bundle member {member}: safetensors data is {data_bytes} bytes, its tensors cover {position}")
    return tensors


def _tensor_range(name: str, info: Any, member: str, data_bytes: int) -> tuple[int, int]:
    problem = None
    if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
        problem = "is not {dtype, shape, data_offsets}"
    elif info["dtype"] not in DTYPE_BYTES:
        problem = f"has an unknown dtype {str(info['dtype'])[:20]!r}"
    elif not isinstance(info["shape"], list) or not all(_count(d) for d in info["shape"]):
        problem = "has a malformed shape"
    elif not (isinstance(info["data_offsets"], list) and len(info["data_offsets"]) == 2 and all(_count(o) for o in info["data_offsets"])):
        problem = "has malformed data offsets"
    else:
        start, end = info["data_offsets"]
        if not start <= end <= data_bytes:
            problem = "points outside the file"
        elif end - start != math.prod(info["shape"]) * DTYPE_BYTES[info["dtype"]]:
            problem = "has a byte range that does not match its dtype and shape"
        else:
            return start, end
    raise BundleError(f"bundle member {member}: safetensors tensor {name[:60]!r} {problem}")


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _what(head: bytes, default: str) -> str:
    return sniff(head) or default


def parse_json(data: bytes, member: str) -> Any:
    """A JSON member's value; BundleError (saying what it is instead, if recognisable) otherwise."""
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        what = sniff(data[:16]) or "not valid UTF-8 JSON"
        raise BundleError(f"bundle member {member} is {what}") from None


def check_text(data: bytes, member: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BundleError(f"bundle member {member} is {sniff(data[:16]) or 'not UTF-8 text'}") from None
    if "\x00" in text:
        raise BundleError(f"bundle member {member} holds NUL characters; it is not text")
    return text
