"""`workbench report`: a run as one self-contained, printable HTML file (see report/html.py).

    from workbench.report import render_report, write_report
    path = write_report(run, store_location.cache_dir, "report.html", overwrite=False)

Nothing here imports torch or transformers: a report is drawn from the store's records and the
cache entries' files, like `workbench show` and `workbench plot`.
"""

from workbench.report.html import ReportError, render_report, write_report

__all__ = ["ReportError", "render_report", "write_report"]
