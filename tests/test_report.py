"""`workbench report`: a run as one self-contained HTML file, read as a browser reads it.

One run on a tiny BERT holds the step kinds whose tables the report must carry (mask search,
prune with timings, head ablation, syntax heads, probe, CAT) on a UD EWT slice in which every
`det` arc is relabelled `<script>x</script>`: a hostile relation name that reaches the relation
table, the probe's label list, head-score names and figure titles. The page is parsed with
html.parser (no script, no outside address, a section per step, every figure an inline SVG,
the hostile text as text), then rendered by a real headless Chromium: a screenshot that is not
blank, a PDF with a page per step, and a DOM that holds every step's section.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest

from tests.conftest import SHARED_DATA
from tests.helpers import REPO, agreement, cli, recipe, subprocess_env, write_yaml
from workbench.db.records import RunDetail
from workbench.report import ReportError, render_report, write_report
from workbench.report.markup import anchor_id

TREEBANK = SHARED_DATA / "ud_english_ewt"
FUNCTIONS = SHARED_DATA / "cpython_stdlib_functions" / "functions.jsonl"
HOSTILE = "<script>x</script>"  # a relation name, as a treebank may spell it
CHROMIUM_MISSING = "install Debian's chromium (apt-get install chromium)"
# As root, Chromium needs --no-sandbox; the network flags keep it from calling out at every start.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]

STEPS = {
    "finetune": {"kind": "finetune", "dataset": "train", "max_steps": 2, "batch_size": 16},
    "attention": {"kind": "attention", "model": "finetune", "dataset": "dev", "save_maps": 1, "gradients": False},
    "mask_search": {"kind": "mask_search", "model": "finetune", "dataset": "dev", "amount": 0.25, "threshold": 0.5},
    "prune": {
        "kind": "prune",
        "model": "finetune",
        "dataset": "dev",
        "mask": "mask_search",
        "batch_sizes": [4],
        "timing_examples": 8,
        "timing_rounds": 2,
        "verify_examples": 4,
    },
    "head_ablation": {"kind": "head_ablation", "model": "finetune", "dataset": "dev"},
    "syntax_heads": {"kind": "syntax_heads", "dataset": "tb_dev", "relations": ["nsubj", HOSTILE], "min_count": 3, "js_sentences": 0},
    "extract_train": {"kind": "extract", "dataset": "tb_train", "pooling": "first"},
    "extract_dev": {"kind": "extract", "dataset": "tb_dev", "pooling": "first"},
    "probe": {"kind": "probe", "task": "deprel", "train": "extract_train", "dev": "extract_dev", "epochs": 3, "batch_size": None},
    "cat": {"kind": "cat_probe", "dataset": "code", "batch_size": 4},
}

TORCH_FREE = """
import json, sys
from pathlib import Path
from workbench.store_location import locate_store
from workbench.report import write_report
location = locate_store(sys.argv[1])
run = location.open(create=False).get_run("latest")
path = write_report(run, location.cache_dir, sys.argv[2])
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers") or m == "matplotlib.pyplot")
print(json.dumps({"bytes": path.stat().st_size, "heavy": heavy}))
"""


def hostile_treebank(folder: Path, source: Path, sentences: int) -> Path:
    """The first `sentences` of a CoNLL-U file with every `det` relation renamed HOSTILE."""
    blocks = source.read_text(encoding="utf-8").split("\n\n")[:sentences]
    text = "\n\n".join(blocks).replace("\tdet\t", f"\t{HOSTILE}\t") + "\n\n"
    path = folder / source.name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def store(tiny_model_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("report")
    datasets = {
        "train": agreement(48, 1),
        "dev": agreement(32, 2),
        "tb_train": {"path": "conllu", "data_files": str(hostile_treebank(folder, TREEBANK / "en_ewt-ud-train.conllu", 40))},
        "tb_dev": {"path": "conllu", "data_files": str(hostile_treebank(folder, TREEBANK / "en_ewt-ud-dev.conllu", 20))},
        "code": {"path": "python_code", "data_files": str(FUNCTIONS), "partition": "test", "limit": 4, "max_length": 96},
    }
    document = recipe(tiny_model_dir("bert"), name="report", datasets=datasets, steps=STEPS)
    recipe_file = write_yaml(folder / "report.yaml", document)
    store = folder / "store"
    result = cli("run", recipe_file, "--store", store, "-q", "--set", "steps.head_ablation.batch_size=32")
    assert result.code == 0, result.text
    return store


@pytest.fixture(scope="module")
def run(store) -> RunDetail:
    from workbench.store_location import locate_store

    return locate_store(store).open(create=False).get_run("latest")


@pytest.fixture(scope="module")
def report_file(run, store, tmp_path_factory) -> Path:
    return write_report(run, store / "cache", tmp_path_factory.mktemp("out") / "report.html")


@pytest.fixture(scope="module")
def page(report_file) -> "Page":
    return Page.parse(report_file.read_text(encoding="utf-8"))


# --- reading the HTML as a browser's parser does -------------------------------------------------


@dataclasses.dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]
    parent: "Element | None"
    children: list["Element"] = dataclasses.field(default_factory=list)
    text: list[str] = dataclasses.field(default_factory=list)

    def all_text(self) -> str:
        """The text of the element and its descendants, a space between nodes (dt|dd, td|td)."""
        return " ".join(["".join(self.text), *(child.all_text() for child in self.children)])

    def find(self, tag: str) -> list["Element"]:
        found = [child for child in self.children if child.tag == tag]
        for child in self.children:
            found += child.find(tag)
        return found


VOID = {"meta", "br", "img", "hr", "link", "input", "col", "wbr", "source", "area", "base", "embed", "param", "track"}


class Page(HTMLParser):
    """A tree of the page (html.parser decodes entities, so text is what a reader sees)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {}, None)
        self.current = self.root
        self.elements: list[Element] = []

    @classmethod
    def parse(cls, source: str) -> "Page":
        page = cls()
        page.source = source
        page.feed(source)
        page.close()
        return page

    def handle_starttag(self, tag, attrs):
        element = Element(tag, dict(attrs), self.current)
        self.current.children.append(element)
        self.elements.append(element)
        if tag not in VOID:
            self.current = element

    def handle_startendtag(self, tag, attrs):  # <path .../> inside SVG
        element = Element(tag, dict(attrs), self.current)
        self.current.children.append(element)
        self.elements.append(element)

    def handle_endtag(self, tag):
        node = self.current
        while node is not self.root and node.tag != tag:
            node = node.parent
        assert node is not self.root, f"</{tag}> closes nothing"
        self.current = node.parent

    def handle_data(self, data):
        self.current.text.append(data)

    def tags(self, tag: str) -> list[Element]:
        return [element for element in self.elements if element.tag == tag]

    def table_rows(self, step_id: str, heading: str) -> list[Element]:
        """The body rows of the step's table whose heading starts with `heading`."""
        for block in self.section(step_id).find("div"):
            titles = block.find("h4")
            if titles and " ".join(titles[0].all_text().split()).startswith(heading):
                return block.find("tbody")[0].find("tr")
        raise AssertionError(f"step {step_id}: no table headed {heading!r}")

    def section(self, step_id: str) -> Element:
        found = [e for e in self.tags("section") if e.attrs.get("id") == f"step-{step_id}"]
        assert len(found) == 1, f"sections for step {step_id}: {len(found)}"
        return found[0]


# --- the page ----------------------------------------------------------------------------------------


def test_no_script_and_nothing_from_outside(page):
    assert not page.tags("script")
    for tag in ("link", "iframe", "object", "embed", "img", "base", "audio", "video", "source", "form"):
        assert not page.tags(tag), tag
    # This run's records hold no address, so none may appear at all (an address inside a record,
    # say in an error message, would be shown as text: never a link, never loaded).
    assert not re.search(r"(?i)\b(https?|ftp):", page.source), re.search(r"(?i).{40}\b(https?|ftp):.{40}", page.source)
    assert "@import" not in page.source and "@font-face" not in page.source
    assert not re.search(r"url\((?!#)", page.source), "CSS and SVG refer only to ids of this page"
    for element in page.elements:
        for name, value in element.attrs.items():
            assert not name.startswith("on"), (element.tag, name)
            if name in ("href", "xlink:href", "src"):
                assert value and (value.startswith("#") or value.startswith("data:image/png;base64,")), (element.tag, value)


def test_one_section_per_step_in_run_order(page, run):
    sections = [e.attrs["id"] for e in page.tags("section") if "step" in (e.attrs.get("class") or "").split()]
    assert sections == [f"step-{step.step_id}" for step in run.steps]
    for step in run.steps:
        heading = page.section(step.step_id).find("h2")[0].all_text()
        assert step.step_id in heading and step.kind in heading
    links = [a.attrs["href"] for a in page.tags("nav")[0].find("a")]
    assert all(f"#step-{step.step_id}" in links for step in run.steps)
    ids = [e.attrs["id"] for e in page.elements if e.attrs.get("id")]
    assert len(ids) == len(set(ids)), "element ids repeat (one SVG's markers would draw in another)"


def test_every_figure_is_an_inline_svg(page, run, store):
    from workbench.figures import run_figures

    expected = {anchor_id("fig", item.name): item.step for item in run_figures(run, store / "cache")}
    figures = page.tags("figure")
    assert [f.attrs["id"] for f in figures] == list(expected), "every figure, in run order"
    for figure in figures:
        svgs = [child for child in figure.children if child.tag == "svg"]
        assert len(svgs) == 1, figure.attrs["id"]
        assert svgs[0].find("text"), "figure text is kept as text"
        assert "xmlns" not in " ".join(svgs[0].attrs)
        step = expected[figure.attrs["id"]]
        assert figure.parent.parent is page.section(step), "a figure sits in its own step's section"
    images = [e for f in figures for e in f.find("image")]
    assert images, "heatmaps embed their cells as PNG data"
    assert "<?xml" not in page.source and "<!DOCTYPE svg" not in page.source and "<metadata" not in page.source


def test_hostile_text_is_text(page, run, report_file):
    assert [s.all_text() for s in page.tags("script")] == []
    relations = page.section("syntax_heads").all_text()
    assert HOSTILE in relations, "the relation is shown, as text"
    assert HOSTILE in page.section("probe").all_text(), "and as a probe label"
    assert "&lt;script&gt;x&lt;/script&gt;" in report_file.read_text()
    # An error and a warning of a step are data as well.
    step = run.step("cat")
    broken = dataclasses.replace(step, error=f"boom </pre>{HOSTILE}", data={**step.data, "warnings": [f"[/red]{HOSTILE}"]})
    other = Page.parse(render_report(dataclasses.replace(run, steps=[broken], error=HOSTILE), None))
    assert not other.tags("script")
    section = other.section(step.step_id)
    assert f"boom </pre>{HOSTILE}" in section.find("pre")[0].all_text()
    assert f"[/red]{HOSTILE}" in section.find("ul")[0].all_text()


def test_the_tables_of_every_kind(page, run):
    def tables(step_id: str) -> str:
        return " ".join(page.section(step_id).all_text().split())

    search = run.step("mask_search")
    assert "Mask search: keep masking while" in tables("mask_search")
    rows = page.table_rows("mask_search", "Mask search")
    assert len(rows) == len(search.data["iterations"])
    assert [tr.attrs.get("class") for tr in rows].count("marked") == 1, "the kept mask is marked"
    prune = tables("prune")
    assert "Pruning: before / after" in prune and "examples/s, batch 4" in prune and "±" in prune and "IQR" in prune
    assert f"{run.step('prune').data['parameters_before']:,}" in prune
    assert "Only one head left in a layer" in tables("head_ablation")
    relations = tables("syntax_heads")
    assert "Best head per relation vs the fixed-offset baseline" in relations and "nsubj" in relations
    probe = tables("probe")
    assert "deprel probes by layer" in probe and "best layer" in probe
    rows = page.table_rows("probe", "deprel probes by layer")
    assert len(rows) == len(run.step("probe").data["layers"])
    assert [tr.attrs.get("class") for tr in rows].count("marked") == 1, "the best layer is marked"
    assert len(page.table_rows("cat", "CAT by attention layer")) == len(run.step("cat").data["cat"])
    assert page.table_rows("head_ablation", "Only one head left")
    assert "CAT by attention layer" in tables("cat")
    assert "Metrics" in tables("finetune") and "Parameters (as run, defaults filled in)" in tables("finetune")


def test_recipe_and_provenance(page, run):
    recipe = page.tags("section")[1]
    assert recipe.attrs["id"] == "recipe" and "--set steps.head_ablation.batch_size=32" in recipe.all_text()
    assert run.recipe_text in [pre.all_text().strip() + "\n" for pre in recipe.find("pre")]
    provenance = " ".join(page.tags("section")[0].all_text().split())
    for fact in ("model id", "seed 3", "transformers", run.environment["packages"]["transformers"], "tb_dev", "conllu", "threads"):
        assert fact in provenance, fact
    assert run.environment["python"] in provenance
    recorded = run.environment.get("provenance")
    if recorded:  # runs record their provenance (workbench/bundles/provenance.py)
        assert recorded["model"]["fingerprint"] in provenance
        for name, fingerprint in recorded["dataset_fingerprints"].items():
            assert fingerprint in provenance, name
        for item in recorded["datasets"]["tb_dev"]["inputs"]:
            assert item["sha256"] in provenance
        assert "batch_size: 32" in recipe.find("pre")[0].all_text(), "the recipe with its overrides applied"


def test_a_run_without_recorded_provenance(run):
    """A run recorded before provenance existed: the model and datasets come from its recipe text."""
    old = dataclasses.replace(run, steps=[], environment={"python": "3.11.0", "packages": {"torch": "2.6.0"}, "odd": {"a": [1, None]}})
    page = Page.parse(render_report(old, None))
    provenance = " ".join(page.tags("section")[0].all_text().split())
    assert "read from its recipe" in provenance and "not recorded by this run" in provenance
    assert "tb_train conllu" in provenance and "odd a: [1, none]" in provenance and "torch 2.6.0" in provenance
    assert not page.tags("figure") and not [s for s in page.tags("section") if s.attrs.get("class") == "step"]


def test_write_report_is_atomic_and_refuses_to_overwrite(run, store, tmp_path):
    run = dataclasses.replace(run, steps=run.steps[:1])  # one figure: the writing is under test
    target = tmp_path / "deep" / "r.html"
    assert write_report(run, store / "cache", target) == target
    target.write_text("keep me")
    with pytest.raises(ReportError) as refused:
        write_report(run, store / "cache", target)
    assert "already exists" in str(refused.value) and "--force" in refused.value.hint
    assert target.read_text() == "keep me"
    write_report(run, store / "cache", target, overwrite=True)
    assert target.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in target.parent.iterdir()) == ["r.html"], "no temporary file is left"
    with pytest.raises(ReportError, match="is a folder"):
        write_report(run, store / "cache", tmp_path)


def test_report_imports_neither_torch_nor_transformers(store, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", TORCH_FREE, str(store), str(tmp_path / "r.html")],
        cwd=REPO, env=subprocess_env(), capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["heavy"] == []
    assert 20_000 < result["bytes"] < 3_000_000, result["bytes"]


# --- a real browser --------------------------------------------------------------------------------


def chromium() -> str:
    """Debian's chromium; the test fails (never skips) without it: CI installs it (.ci/run)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail(f"no chromium on PATH: {CHROMIUM_MISSING}", pytrace=False)


def headless(browser: str, profile: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_chromium_renders_the_report(report_file, run, tmp_path):
    browser = chromium()
    url = report_file.resolve().as_uri()
    shot, pdf = tmp_path / "report.png", tmp_path / "report.pdf"
    headless(browser, tmp_path / "p1", "--window-size=1200,3000", f"--screenshot={shot}", url)
    pixels = matplotlib.image.imread(shot)[..., :3]  # [height, width, rgb] in 0..1
    assert pixels.shape[:2] == (3000, 1200)
    ink = np.any(pixels < 0.9, axis=-1).mean()
    assert ink > 0.02, f"the screenshot is nearly blank ({ink:.1%} of pixels are not white)"
    assert np.unique(pixels.reshape(-1, 3).round(2), axis=0).shape[0] > 50, "figures draw in colour"

    headless(browser, tmp_path / "p2", "--no-pdf-header-footer", f"--print-to-pdf={pdf}", url)
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page\b", data))
    assert pages > len(run.steps), f"{pages} PDF pages: the print stylesheet starts every step on a new page"

    dom = Page.parse(headless(browser, tmp_path / "p3", "--dump-dom", url).stdout)
    assert not dom.tags("script")
    for step in run.steps:
        assert dom.section(step.step_id).find("h2")
    assert len(dom.tags("svg")) == len(dom.tags("figure")) > 0
    assert HOSTILE in dom.section("syntax_heads").all_text()
