"""Views of the analysis steps' data: probe curves by layer, best heads per relation, CAT by layer."""

from __future__ import annotations
