"""Local delimited files read without `datasets` (issue 14): the same columns, value for value and type
for type, as datasets' csv builder gives, or the file is left to the builder."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA
from workbench.data.kinds import kind_for
from workbench.data.text_loading import _by_hand_file, _columns_from_scan, _load_with_datasets, _scan_local_files
from workbench.recipe.schema import DatasetSpec

REPO = Path(__file__).resolve().parents[1]
SHARED_FILES = [
    SHARED_DATA / "glue_sst2" / "train.tsv",
    SHARED_DATA / "glue_sst2" / "dev.tsv",
    SHARED_DATA / "glue_mrpc" / "train.tsv",
    SHARED_DATA / "glue_mrpc" / "dev.tsv",
]
FIXTURES = sorted((REPO / "tests" / "data" / "bad_inputs").glob("*.[tc]sv"))


def _spec(path: Path) -> DatasetSpec:
    return DatasetSpec(path=path.suffix.lstrip("."), data_files=str(path))


def _both(path: Path):
    """(columns read by hand or None, columns datasets reads as lists) for one local file."""
    spec = _spec(path)
    kind = kind_for(spec.path)
    keep = _by_hand_file(spec, path.parent, kind)
    _, whole = _scan_local_files(spec, path.parent, kind, keep=keep)
    by_hand = _columns_from_scan(whole) if whole is not None else None
    columns, _ = _load_with_datasets("test", spec, path.parent, kind)
    return by_hand, {name: list(columns[name]) for name in columns}


def _same(by_hand: dict, builder: dict) -> None:
    assert list(by_hand) == list(builder)
    for name in builder:
        assert len(by_hand[name]) == len(builder[name]), name
        for ours, theirs in zip(by_hand[name], builder[name]):
            assert type(ours) is type(theirs) and ours == theirs, (name, ours, theirs)


@pytest.mark.parametrize("path", SHARED_FILES, ids=lambda p: f"{p.parent.name}-{p.name}")
def test_the_shared_glue_files_read_by_hand_equal_the_builder(path):
    if not path.exists():
        pytest.skip("../shared/data is not beside the repository")
    by_hand, builder = _both(path)
    assert by_hand is not None, "a plain GLUE file must take the fast path"
    _same(by_hand, builder)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.name)
def test_the_broken_fixtures_are_read_by_hand_as_the_builder_reads_them_or_left_to_it(path):
    try:
        by_hand, builder = _both(path)
    except Exception:  # noqa: BLE001 -- a fixture the scan or the builder refuses: nothing to compare
        return
    if by_hand is not None:
        _same(by_hand, builder)


CASES = {
    "ints and strings": ("a\tb\n1\tx\n-2\ty\n+3\t7\n007\tNA\n", True),
    "strings with nulls": ("s\tn\nhello\t1\n\t2\nnull\t3\nworld\t4\n", True),
    "floats": ("x\tlabel\n1.5\t0\n2\t1\n", False),
    "booleans": ("flag\tlabel\nTrue\t0\nfalse\t1\n", False),
    "an integer column with a null": ("n\tlabel\n1\t0\n\t1\n", False),
    "numbers only in a chunk": ("v\n" + "1\n" * 10_000 + "word\n", False),
    "a column of nulls": ("v\tw\nNA\tx\n\ty\n", False),
    "duplicate names": ("a\ta\n1\tx\n", False),
    "padded numbers": ("a\tb\n 5\tx\n6\ty\n", False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_crafted_files_are_read_by_hand_only_when_the_builder_agrees(name, tmp_path):
    text, fast = CASES[name]
    path = tmp_path / "data.tsv"
    path.write_text(text)
    try:
        by_hand, builder = _both(path)
    except Exception:  # noqa: BLE001 -- the builder refuses the file (mixed chunks): then we must not read it
        spec = _spec(path)
        _, whole = _scan_local_files(spec, tmp_path, kind_for("tsv"), keep=_by_hand_file(spec, tmp_path, kind_for("tsv")))
        assert not fast and (whole is None or _columns_from_scan(whole) is None)
        return
    assert (by_hand is not None) == fast
    if by_hand is not None:
        _same(by_hand, builder)


def test_a_run_on_a_local_tsv_does_not_import_datasets(tiny_model_dir, tmp_path):
    """Nor pandas (pyarrow would load it for pa.array and to_numpy); scikit-learn's metrics still do."""
    if not SHARED_FILES[1].exists():
        pytest.skip("../shared/data is not beside the repository")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"version: 1\nname: light\nmodel: {{id: {tiny_model_dir('bert')}, head: sequence-classification, num_labels: 2}}\n"
        f"datasets:\n  dev: {{path: tsv, data_files: {SHARED_FILES[1]}, text: sentence, label: label, limit: 40}}\n"
        "steps:\n  extract: {kind: extract, dataset: dev}\n"
    )
    code = (
        "import json, sys\nfrom workbench.api import run_recipe\nfrom workbench.progress import SilentProgress\n"
        f"run_recipe({str(recipe)!r}, store={str(tmp_path / 'store')!r}, progress=SilentProgress())\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('datasets', 'pandas'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
