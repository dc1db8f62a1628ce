"""BERTology Workbench: a declarative, YAML-driven workbench for looking inside transformer models."""

__version__ = "0.1.0"
