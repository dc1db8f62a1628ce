"""The report's stylesheet, inlined into every page (a Python string: no package data to ship)."""

CSS = """\
/* The report's look: one file, no web fonts, no scripts; printable (a step per page, figures whole). */
:root { color-scheme: light; --ink: #1a1a1a; --muted: #5f6368; --rule: #d0d4d9; --mark: #eef5ff; --warn: #8a5a00; --bad: #b3261e; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 72rem; padding: 1.5rem 2rem 3rem; color: var(--ink); background: #fff;
       font: 14px/1.45 "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.6rem; margin: 0 0 .3rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .5rem; padding-top: .6rem; border-top: 2px solid var(--ink); }
h2 .kind, h1 .kind { font-weight: normal; color: var(--muted); }
h3 { font-size: 1rem; margin: 1.2rem 0 .4rem; }
a { color: #0b57d0; }
code, pre, .key { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; }
pre { background: #f6f8fa; border: 1px solid var(--rule); padding: .6rem .8rem; white-space: pre-wrap; overflow-wrap: anywhere; }
pre.error { background: #fdf0ef; border-color: #f0b8b3; color: var(--bad); }
.muted, .note { color: var(--muted); }
.note { font-size: 12px; margin: .3rem 0 .8rem; }
ul.warnings { padding-left: 1.2rem; color: var(--warn); }
table { border-collapse: collapse; margin: .4rem 0 1rem; font-variant-numeric: tabular-nums; }
h4 { font-size: 14px; margin: 1rem 0 .25rem; }
div.table { margin: .4rem 0 1rem; }
div.table table { margin: 0; }
th, td { padding: .15rem .6rem; border-bottom: 1px solid var(--rule); text-align: left; vertical-align: top; overflow-wrap: break-word; }
th { border-bottom: 1.5px solid var(--ink); }
td code, dd code { overflow-wrap: anywhere; } /* hashes and paths: wrap rather than widen the page */
td.num, th.num { text-align: right; white-space: nowrap; }
tr.marked td { background: var(--mark); font-weight: bold; }
.status { font-weight: bold; }
.status-finished, .status-done { color: #146c2e; }
.status-cached { color: #00639b; }
.status-failed { color: var(--bad); }
.status-interrupted, .status-running { color: var(--warn); }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .15rem 1rem; margin: .5rem 0 1rem; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
nav ol { columns: 2; padding-left: 1.4rem; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem 1.5rem; align-items: flex-start; }
figure { margin: .5rem 0; break-inside: avoid; page-break-inside: avoid; }
figure svg { display: block; }
figure svg image { image-rendering: pixelated; } /* heatmap cells stay sharp when scaled */
figcaption { font-size: 11px; color: var(--muted); margin-top: .2rem; }
footer { margin-top: 3rem; font-size: 12px; color: var(--muted); }

@page { size: A4; margin: 14mm 12mm; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  nav { break-after: page; }
  section.step { break-before: page; page-break-before: always; }
  section.step > h2 { border-top: none; margin-top: 0; }
  h2, h3, h4 { break-after: avoid; page-break-after: avoid; }
  figure, tr, pre.error { break-inside: avoid; page-break-inside: avoid; }
  figure svg { max-width: 100% !important; }
  a { color: inherit; text-decoration: none; }
  tr.marked td { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
}
"""
