"""Dataset fingerprints follow content and structure, not where the files lie."""

from __future__ import annotations

from workbench.data.sources import dataset_fingerprint
from workbench.recipe.schema import DatasetSpec


def _spec(**fields) -> DatasetSpec:
    return DatasetSpec(path="csv", text="sentence", **fields)


def test_same_content_elsewhere_same_print_and_new_content_new_print(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "x.csv").write_text("sentence\nhello\n")
    (tmp_path / "b" / "x.csv").write_text("sentence\nhello\n")
    assert dataset_fingerprint(_spec(data_files="a/x.csv"), tmp_path) == dataset_fingerprint(_spec(data_files="b/x.csv"), tmp_path)
    (tmp_path / "b" / "x.csv").write_text("sentence\ngoodbye\n")
    assert dataset_fingerprint(_spec(data_files="a/x.csv"), tmp_path) != dataset_fingerprint(_spec(data_files="b/x.csv"), tmp_path)


def test_data_dir_contents_count_for_every_builder(tmp_path):
    for name, text in (("v1", "sentence\none\n"), ("v2", "sentence\ntwo\n")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "part.csv").write_text(text)
    assert dataset_fingerprint(_spec(data_dir="v1"), tmp_path) != dataset_fingerprint(_spec(data_dir="v2"), tmp_path)


def test_which_split_a_file_belongs_to_counts(tmp_path):
    (tmp_path / "a.csv").write_text("sentence\na\n")
    (tmp_path / "b.csv").write_text("sentence\nb\n")
    together = _spec(data_files={"train": ["a.csv", "b.csv"]})
    apart = _spec(data_files={"train": "a.csv", "validation": "b.csv"})
    assert dataset_fingerprint(together, tmp_path) != dataset_fingerprint(apart, tmp_path)
