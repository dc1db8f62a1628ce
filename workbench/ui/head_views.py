"""Views of the head steps' data: pruning curves, mask-search iterations, prune before/after."""

from __future__ import annotations
