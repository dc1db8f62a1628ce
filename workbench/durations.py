"""How a duration reads wherever the workbench shows one (terminal views, the browser, the report)."""

from __future__ import annotations


def duration_text(seconds: float | None, *, spaced: bool = False, hours: bool = False) -> str:
    """"-", "4.2s", "3m07s" (and "2h05m" with `hours`); `spaced` for prose: "4.2 s", "3 m 07 s"."""
    if seconds is None:
        return "-"
    gap = " " if spaced else ""
    if seconds < 60:
        return f"{seconds:.1f}{gap}s"
    if hours and seconds >= 3600:
        return f"{int(seconds // 3600)}{gap}h{gap}{int(seconds % 3600 // 60):02d}{gap}m"
    return f"{int(seconds // 60)}{gap}m{gap}{int(seconds % 60):02d}{gap}s"
