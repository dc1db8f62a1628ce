"""Publication figures of a run, drawn with matplotlib's object API on the Agg backend.

    figures = run_figures(run, store_dir / "cache", steps=None, scores=None)   # list[NamedFigure]
    figures = compare_figures(run_a, run_b)                                    # b - a
    write_figures(figures, "figures/", "svg")                                  # list[Path]

One module per figure kind (heads, curves, ablation, speed, probes, syntax, cat, attention) takes
plain data (lists, numpy) and returns a `matplotlib.figure.Figure`; `run` and `compare` turn store
records into named figures; `output` writes them. Nothing here imports torch or transformers, and
no global matplotlib state is touched (style.PAPER_RC is applied per figure).
"""

from workbench.figures.compare import compare_figures
from workbench.figures.errors import FigureError, NothingToPlot, OutputError, UnknownScore, UnknownStep
from workbench.figures.named import NamedFigure
from workbench.figures.output import FORMATS, write_figures
from workbench.figures.run import run_figures

__all__ = [
    "FORMATS",
    "FigureError",
    "NamedFigure",
    "NothingToPlot",
    "OutputError",
    "UnknownScore",
    "UnknownStep",
    "compare_figures",
    "run_figures",
    "write_figures",
]
