"""Open a bundle someone else wrote, trusting nothing, and write nothing until all of it checks out.

`open_bundle` reads every member once, in memory or streamed, and refuses the bundle (BundleError)
at the first problem: a name that is absolute, climbs out (`../`), is hidden or duplicated (also
up to letter case, which some file systems ignore); a symbolic link, folder entry or encrypted
member; more members or bytes than the limits (workbench/bundles/layout.py); a member the manifest
does not list, or one it lists that is absent; a size or sha256 that differs from the manifest;
a file type the layout does not allow (pickles by name, and by content where JSON or safetensors
should be); a safetensors header that does not describe its file; a cache entry whose own
manifest disagrees with the bundle's or whose result.json does not fit its tensors; a
results.json of the wrong shape. Only after that may `extract_entry` write an entry's files into
a staging folder, hashing them again as they are written (the zip could change in between).

Zip sizes are claims: zipfile stops reading a member at its declared size and checks its CRC,
so the per-member limit is checked on the declared size and a member cannot grow while read.
"""

from __future__ import annotations

import hashlib
import stat
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.bundles import checks, layout
from workbench.bundles.layout import BundleError
from workbench.db.records import RunDetail

CHUNK = 1 << 20
ALLOWED_COMPRESSION = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


@dataclass(frozen=True)
class Member:
    path: str
    bytes: int
    sha256: str


@dataclass
class Bundle:
    """A checked bundle. Use as a context manager: the zip stays open for `extract_entry`."""

    path: Path
    sha256: str  # of the zip file itself: identifies the bundle
    members: dict[str, Member]
    readme: str
    recipe_text: str
    recipe_as_run: str
    results: dict[str, Any]
    provenance: dict[str, Any]
    run: RunDetail
    entries: dict[str, list[Member]] = field(default_factory=dict)  # key -> its members (paths inside the entry)
    _zip: zipfile.ZipFile | None = None

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()
            self._zip = None

    def extract_entry(self, key: str, folder: Path) -> None:
        """Write entry `key`'s files into `folder` (empty, private), re-checking every hash."""
        assert self._zip is not None, "the bundle is closed"
        for member in self.entries[key]:
            target = folder / member.path
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            written = 0
            name = layout.entry_member(key, member.path)
            with self._zip.open(name) as source, open(target, "xb") as sink:  # x: never through an existing link
                for block in _blocks(source, name):
                    digest.update(block)
                    written += len(block)
                    sink.write(block)
            if written != member.bytes or digest.hexdigest() != member.sha256:
                raise BundleError(f"bundle member {name} changed while it was being read; nothing was imported")


def open_bundle(path: str | Path) -> Bundle:
    """Check a bundle completely (see the module docstring); nothing is written."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no bundle at {path}" if not path.exists() else f"{path} is not a file")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as error:
        raise BundleError(f"{path} is not a readable zip file ({error})") from None
    try:
        bundle = _check(path, archive)
    except BaseException:
        archive.close()
        raise
    bundle._zip = archive
    return bundle


def _check(path: Path, archive: zipfile.ZipFile) -> Bundle:
    infos = archive.infolist()
    if len(infos) > layout.MAX_MEMBERS:
        raise BundleError(f"{path} has {len(infos)} members, more than a bundle may have ({layout.MAX_MEMBERS})")
    by_name = _check_names(infos)
    total = sum(info.file_size for info in infos)
    if total > layout.MAX_TOTAL_BYTES:
        raise BundleError(f"{path} unpacks to {total} bytes, more than a bundle may ({layout.MAX_TOTAL_BYTES})")
    if layout.MANIFEST not in by_name:
        raise BundleError(f"{path} has no {layout.MANIFEST}: it is not a workbench bundle")
    members = _read_manifest(_read_small(archive, by_name[layout.MANIFEST]))
    _check_listing(members, by_name)

    texts: dict[str, bytes] = {}  # the members read again below: top-level files, entries' manifests and results
    headers: dict[str, dict[str, Any]] = {}
    for name, member in members.items():
        content, header = _read_member(archive, by_name[name], member, keep=name.endswith((".json", ".yaml", ".txt")))
        if content is not None and (name in layout.REQUIRED or name.endswith(("/manifest.json", "/result.json"))):
            texts[name] = content
        if header is not None:
            headers[name] = header
    for name in layout.REQUIRED:
        if name not in members:
            raise BundleError(f"{path} has no {name}: it is not a complete workbench bundle")

    from workbench.bundles.results import run_from_results

    results = checks.parse_json(texts[layout.RESULTS], layout.RESULTS)
    provenance = checks.parse_json(texts[layout.PROVENANCE], layout.PROVENANCE)
    if not isinstance(provenance, dict):
        raise BundleError(f"bundle member {layout.PROVENANCE} is not a JSON object")
    from workbench.recipe.yaml_source import MAX_BYTES

    for name in (layout.RECIPE, layout.RECIPE_AS_RUN):  # read by the recipe reader later: its own limit
        if len(texts[name]) > MAX_BYTES:
            raise BundleError(f"bundle member {name} is larger than a recipe may be ({MAX_BYTES // 1024} KiB)")
    recipe_text = checks.check_text(texts[layout.RECIPE], layout.RECIPE)
    run = run_from_results(results, recipe_text)
    entries = _check_entries(members, texts, headers, {step.key for step in run.steps})
    return Bundle(
        path=path,
        sha256=_file_sha256(path),
        members=members,
        readme=checks.check_text(texts[layout.README], layout.README),
        recipe_text=recipe_text,
        recipe_as_run=checks.check_text(texts[layout.RECIPE_AS_RUN], layout.RECIPE_AS_RUN),
        results=results,
        provenance=provenance,
        run=run,
        entries=entries,
    )


def _check_names(infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
    by_name: dict[str, zipfile.ZipInfo] = {}
    folded: dict[str, str] = {}
    for info in infos:
        name = info.filename
        shown = repr(name[:120])
        if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or "\\" in name:
            raise BundleError(f"bundle member {shown} has an absolute or Windows path; refused")
        if ".." in name.split("/"):
            raise BundleError(f"bundle member {shown} climbs out of the bundle (..); refused")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise BundleError(f"bundle member {shown} is a symbolic link; refused")
        if info.is_dir() or (stat.S_IFMT(mode) and not stat.S_ISREG(mode)):
            raise BundleError(f"bundle member {shown} is not a plain file; refused")
        if not layout.MEMBER_NAME.match(name) or len(name) > layout.MAX_NAME_LENGTH or name.count("/") >= layout.MAX_DEPTH:
            raise BundleError(f"bundle member {shown} has a name a bundle cannot have; refused")
        if name in by_name or name.casefold() in folded:
            raise BundleError(f"bundle member {shown} appears twice; refused")
        if name.lower().endswith(layout.PICKLE_SUFFIXES):
            raise BundleError(f"bundle member {shown} is a pickle format; bundles hold only safetensors and JSON")
        if name != layout.MANIFEST and name not in layout.REQUIRED and not layout.ENTRY_FILE.match(name):
            raise BundleError(
                f"bundle member {shown} is not part of the bundle layout; refused",
                hint="a bundle holds README.txt, recipe.yaml, recipe.as_run.yaml, results.json, provenance.json, "
                "manifest.json and entries/<key>/ with safetensors and JSON files only",
            )
        if info.flag_bits & 0x1:
            raise BundleError(f"bundle member {shown} is encrypted; refused")
        if info.compress_type not in ALLOWED_COMPRESSION:
            raise BundleError(f"bundle member {shown} uses an unsupported compression method; refused")
        if info.file_size > layout.MAX_MEMBER_BYTES:
            raise BundleError(f"bundle member {shown} is {info.file_size} bytes, more than a member may be ({layout.MAX_MEMBER_BYTES})")
        by_name[name] = info
        folded[name.casefold()] = name
    return by_name


def _read_manifest(data: bytes) -> dict[str, Member]:
    value = checks.parse_json(data, layout.MANIFEST)
    if not isinstance(value, dict) or value.get("format") != layout.FORMAT:
        raise BundleError(f"bundle member {layout.MANIFEST} does not describe a workbench bundle")
    version = value.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version > layout.FORMAT_VERSION:
        raise BundleError(
            f"the bundle's format version is {version!r}; this workbench reads versions up to {layout.FORMAT_VERSION}",
            hint="upgrade the workbench (pip install -U bertology-workbench)",
        )
    items = value.get("members")
    if not isinstance(items, list):
        raise BundleError(f"bundle member {layout.MANIFEST} has no members list")
    members: dict[str, Member] = {}
    for item in items:
        if not _file_record(item) or not checks_sha(item["sha256"]):
            raise BundleError(f"bundle member {layout.MANIFEST} has a malformed item: {str(item)[:100]}")
        if item["path"] in members or item["path"] == layout.MANIFEST:
            raise BundleError(f"bundle member {layout.MANIFEST} lists {item['path'][:120]!r} twice")
        members[item["path"]] = Member(item["path"], item["bytes"], item["sha256"])
    return members


def checks_sha(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def _check_listing(members: dict[str, Member], by_name: dict[str, zipfile.ZipInfo]) -> None:
    present = set(by_name) - {layout.MANIFEST}
    unlisted = sorted(present - set(members))
    if unlisted:
        raise BundleError(f"bundle member {unlisted[0][:120]!r} is not listed in {layout.MANIFEST}; refused")
    absent = sorted(set(members) - present)
    if absent:
        raise BundleError(f"{layout.MANIFEST} lists {absent[0][:120]!r}, which the bundle does not hold")
    for name, member in members.items():
        if by_name[name].file_size != member.bytes:
            raise BundleError(f"bundle member {name}: {by_name[name].file_size} bytes, {layout.MANIFEST} says {member.bytes}")


def _read_member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, member: Member, *, keep: bool
) -> tuple[bytes | None, dict[str, Any] | None]:
    """Hash a member, check its type; returns (its bytes if kept, its safetensors header if it is one)."""
    name = info.filename
    if keep and member.bytes > layout.MAX_TEXT_BYTES:
        raise BundleError(f"bundle member {name} is {member.bytes} bytes, more than a JSON or text member may be ({layout.MAX_TEXT_BYTES})")
    is_tensors = name.endswith(".safetensors")
    digest = hashlib.sha256()
    kept = bytearray()
    head = bytearray()
    wanted_head = 8
    size = 0
    with archive.open(info) as source:
        for block in _blocks(source, name):
            digest.update(block)
            size += len(block)
            if keep:
                kept += block
            position = 0
            while is_tensors and len(head) < wanted_head and position < len(block):  # the length, then the header
                taken = block[position : position + wanted_head - len(head)]
                head += taken
                position += len(taken)
                if len(head) == 8 and wanted_head == 8:
                    wanted_head = 8 + checks.safetensors_header_length(bytes(head), member.bytes, name)
    if size != member.bytes or digest.hexdigest() != member.sha256:
        raise BundleError(f"bundle member {name} does not match its sha256 in {layout.MANIFEST}; the bundle is damaged or was altered")
    header = checks.check_safetensors(bytes(head), member.bytes, name) if is_tensors else None
    if keep and name.endswith(".json"):
        checks.parse_json(bytes(kept), name)  # JSON by content too, not only by name
    return (bytes(kept) if keep else None), header


def _blocks(source: Any, name: str) -> Iterator[bytes]:
    try:
        while True:
            block = source.read(CHUNK)
            if not block:
                return
            yield block
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as error:
        raise BundleError(f"bundle member {name} cannot be read ({error}); the bundle is damaged") from None


def _read_small(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    if info.file_size > layout.MAX_TEXT_BYTES:
        raise BundleError(f"bundle member {info.filename} is larger than {layout.MAX_TEXT_BYTES} bytes")
    with archive.open(info) as source:
        return b"".join(_blocks(source, info.filename))


def _check_entries(
    members: dict[str, Member], texts: dict[str, bytes], headers: dict[str, dict[str, Any]], step_keys: set[str]
) -> dict[str, list[Member]]:
    """Every entries/<key>/ folder: a key of the run's steps, its own manifest matching the bundle's, its
    result.json fitting its tensors (the checks Cache.load makes, made before anything is written)."""
    grouped: dict[str, dict[str, Member]] = {}
    for name, member in members.items():
        match = layout.ENTRY_FILE.match(name)
        if match:
            grouped.setdefault(match["key"], {})[match["path"]] = member
    entries: dict[str, list[Member]] = {}
    for key, files in grouped.items():
        where = f"{layout.ENTRIES}/{key[:12]}"
        if key not in step_keys:
            raise BundleError(f"bundle entry {where} is not the cache entry of any step of the bundle's run; refused")
        for required in ("manifest.json", "result.json"):
            if required not in files:
                raise BundleError(f"bundle entry {where} has no {required}")
        own = checks.parse_json(texts[layout.entry_member(key, "manifest.json")], f"{where}/manifest.json")
        listed = _entry_manifest(own, where)
        if set(listed) != set(files) - {"manifest.json"}:
            raise BundleError(f"bundle entry {where}: its manifest.json and the bundle's list different files")
        for path, (size, sha256) in listed.items():
            if (files[path].bytes, files[path].sha256) != (size, sha256):
                raise BundleError(f"bundle entry {where}: {path} does not match the entry's own manifest.json")
        _check_entry_result(key, where, texts[layout.entry_member(key, "result.json")], headers.get(layout.entry_member(key, "tensors.safetensors")))
        entries[key] = [Member(path, m.bytes, m.sha256) for path, m in sorted(files.items())]
    return entries


def _entry_manifest(value: Any, where: str) -> dict[str, tuple[int, str]]:
    """{path: (bytes, sha256)} of an entry's manifest.json, in the cache's format (workbench/cache.py)."""
    if not isinstance(value, list) or not value:
        raise BundleError(f"bundle entry {where}: manifest.json is empty or malformed")
    listed = {}
    for item in value:
        if not _file_record(item) or item["path"] in listed:
            raise BundleError(f"bundle entry {where}: manifest.json has a malformed item: {str(item)[:100]}")
        listed[item["path"]] = (item["bytes"], item["sha256"])
    return listed


def _check_entry_result(key: str, where: str, result_json: bytes, tensors: dict[str, Any] | None) -> None:
    from workbench.cache import TENSOR_GROUPS, TENSOR_RANKS, _summary_problem  # the cache's own rules

    summary = checks.parse_json(result_json, f"{where}/result.json")
    problem = _summary_problem(summary)
    if problem:
        raise BundleError(f"bundle entry {where}: result.json {problem}")
    stored: dict[str, set[str]] = {group: set() for group in TENSOR_GROUPS}
    for name, info in (tensors or {}).items():
        group, _, short = name.partition("/")
        if group not in stored or not short:
            raise BundleError(f"bundle entry {where}: tensors.safetensors holds an unexpected tensor {name[:60]!r}")
        ranks = TENSOR_RANKS.get(group)
        if ranks is not None and len(info["shape"]) not in ranks:
            raise BundleError(f"bundle entry {where}: {name[:60]} has shape {info['shape']}")
        stored[group].add(short)
    for group in TENSOR_GROUPS:
        if set(summary[group]) != stored[group]:
            raise BundleError(f"bundle entry {where}: result.json lists {group} that tensors.safetensors does not hold")


def _file_sha256(path: Path) -> str:
    from workbench.hashing import read_sha256

    return read_sha256(path)


def _file_record(item: object) -> bool:
    """Whether a manifest item is exactly {path: str, bytes: int >= 0, sha256: str}."""
    return (
        isinstance(item, dict)
        and set(item) == {"path", "bytes", "sha256"}
        and isinstance(item["path"], str)
        and isinstance(item["bytes"], int)
        and not isinstance(item["bytes"], bool)
        and item["bytes"] >= 0
        and isinstance(item["sha256"], str)
    )
