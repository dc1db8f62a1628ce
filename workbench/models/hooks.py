"""Head gates and attention observers for your own loops, without a recipe.

    loaded = wb.load_model("path/or/hub-id", head="sequence-classification")
    gates = torch.ones(loaded.layout.shape); gates[3, 5] = 0      # [layers, heads]
    with wb.head_gates(loaded, gates):
        logits = loaded.model(**inputs).logits                   # head 3-5 masked (Michel's xi)

    def keep(layer, head_ids, probs): ...                        # probs [batch, heads, q, k], detached
    with wb.observe_attention(loaded, keep):
        loaded.model(**inputs)                                   # eager attention for this block only

Both work for models loaded with `load_model` (the workbench attention function); gates may be
[layers, heads], [batch, layers, heads] or [batch, seq, layers, heads], and may require grad, in
which case one backward gives every head's importance.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from workbench.models.attention import head_hooks


@contextmanager
def head_gates(loaded: Any, gates: torch.Tensor) -> Iterator[None]:
    """Multiply every head's attention output by its gate for the forward passes inside the block."""
    _require_heads(loaded, "head gates")
    with head_hooks(gates=gates.to(_device(loaded))):
        yield


@contextmanager
def observe_attention(loaded: Any, *observers: Callable[[int, torch.Tensor, torch.Tensor], None]) -> Iterator[None]:
    """Call `observer(layer, head_ids, probs)` with every layer's attention probabilities inside the block."""
    _require_heads(loaded, "attention observers")
    with head_hooks(observers=observers):
        yield


def _require_heads(loaded: Any, what: str) -> None:
    require = getattr(loaded, "require_heads", None)
    if require is None:
        from workbench.errors import ModelError

        raise ModelError(f"{what} need a model loaded with workbench.load_model (it installs the workbench attention)")
    require(what)


def _device(loaded: Any) -> torch.device:
    """Where the model takes its inputs (a dispatched model's first parameter may be on the meta device)."""
    device = getattr(loaded, "device", None)
    return device if isinstance(device, torch.device) else next(loaded.model.parameters()).device
