"""The workbench's own attention function: how we reach every head on Transformers 5.

Transformers 5 has no `head_mask` and its default sdpa attention returns no weights. Models that
dispatch through `AttentionInterface` call whatever function is registered under their
`attn_implementation`, so we register one (`workbench`) that

  * runs sdpa when nobody needs the attention weights, and an exact eager softmax when someone does
    (or when the layer uses something sdpa cannot do: logit softcapping, attention sinks);
  * multiplies each head's output by its gate (Michel et al.'s xi_h), when gates are installed;
  * hands the attention probabilities of every layer to observers, which keep streaming statistics
    instead of storing [examples, layers, heads, seq, seq] maps.

It also registers sdpa's mask builder under the same name: without one, Transformers builds no mask
at all for an unknown implementation and padding would be attended silently.

Gates and observers are installed by the `head_hooks` context manager and are gone when it exits.
With no hooks active the function is plain sdpa (eager for softcapping and sinks).

The eager path reproduces each family's own `eager_attention_forward` (Transformers 5.24), feature by
feature, from what the layer hands the attention function:

  * `scaling` (Gemma's query_pre_attn_scalar, GPT-2's inverse layer index, ...), default 1/sqrt(head_dim);
  * `softcap` (Gemma-2, T5Gemma, VaultGemma): tanh(scores / cap) * cap before the mask;
  * `position_bias` (T5-style relative buckets, LayoutLMv3, wav2vec2-BERT): added before the mask;
  * attention sinks, `s_aux` (gpt-oss, GraniteSWA, MiMo-V2, DeepSeek-V4, HY-V4, Flint) or `sinks`
    (Inkling-2): one extra logit per head (or per query) in the softmax, dropped from the weights, so a
    query's weights sum to less than one -- what `output_attentions=True` returns under eager (GraniteSWA's
    eager scales its output by sigmoid(logsumexp - sink) instead, the same output, and reports the
    weights before the sink's share: ours are the weights that produced the output);
  * `sliding_window` needs nothing here: the mask function (sdpa's, registered under our name, as
    eager's builds on it) already hides keys outside the window; a missing mask means no padding and
    a window longer than the keys, and is read as sdpa reads it (causal from `is_causal`, top-left);
  * grouped-query attention from the shapes (pruned layers keep their own query/key-value ratio).

ALiBi needs nothing either: BLOOM, Falcon and MPT do not dispatch through the attention interface in
Transformers 5 (they compute attention inline), so `load_model` finds no attention modules and head
steps refuse them as they refuse DeBERTa-v2 and T5. Keys selected by a sparse indexer (`indices`,
`block_indices`: DeepSeek-V3.2, GLM-MoE-DSA, Mistral-Large-4, ...) are passed to kernels only for
implementations other than eager/sdpa and cannot be reproduced: those layers raise a ModelError
naming the feature rather than attend to every key.

A model spread over devices (`model.device_map`, accelerate's hooks) runs each layer on its own
device; cpu/disk-offloaded layers get their weights loaded for the forward and dropped after it.
Nothing here touches weights, so offloading changes nothing; across devices, each layer's gates
are moved to the layer (autograd carries their gradient back), and the probabilities handed to
observers or tapped move to the model's input device (`wb_home` on the attention module, set by
loading), where the callers' token masks and accumulators are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch

from workbench.errors import ModelError

ATTENTION_NAME = "workbench"

# Keyword arguments that change the attention computation in ways the workbench cannot reproduce.
UNSUPPORTED_FEATURES = {
    "indices": "sparse attention over the keys an indexer selects (`indices`)",
    "block_indices": "block-sparse attention (`block_indices`)",
}

# observer(layer, head_ids [heads], probs [batch, heads, q_len, k_len]) -- probs are detached.
Observer = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass
class HeadHooks:
    gates: torch.Tensor | None = None  # [layers, heads] | [batch, layers, heads] | [batch, seq, layers, heads]
    observers: Sequence[Observer] = ()
    eager: bool = False  # compute weights explicitly even without observers (a baseline, or a check)
    discovered: list[torch.nn.Module] = field(default_factory=list)  # filled in discovery mode
    discover: bool = False
    # With `tap=True`, every layer's probabilities stay in the autograd graph and are collected here as
    # (layer, head_ids, probs [batch, heads, q_len, k_len]), so a caller can take dL/dA of them.
    tap: bool = False
    tapped: list[tuple[int, torch.Tensor, torch.Tensor]] = field(default_factory=list)


_ACTIVE: ContextVar[HeadHooks | None] = ContextVar("workbench_head_hooks", default=None)


@contextmanager
def head_hooks(
    gates: torch.Tensor | None = None, observers: Sequence[Observer] = (), eager: bool = False, tap: bool = False
) -> Iterator[HeadHooks]:
    """Install gates and observers for the forward passes inside the block.

    `tap`: keep every layer's attention probabilities differentiable in `hooks.tapped` (cleared
    by the caller between forward passes).
    """
    hooks = HeadHooks(gates=gates, observers=tuple(observers), eager=eager, tap=tap)
    token = _ACTIVE.set(hooks)
    try:
        yield hooks
    finally:
        _ACTIVE.reset(token)


def register_workbench_attention() -> None:
    """Make `attn_implementation="workbench"` available to every model (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, workbench_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)


def number_attention_modules(model: torch.nn.Module, input_ids: torch.Tensor) -> list[torch.nn.Module]:
    """Run one tiny forward pass and number the attention modules in the order they are called.

    Not every architecture sets `layer_idx` on its attention modules; the call order always gives
    the layer. Each module gets `wb_layer`, and `wb_head_ids` (the original ids of its heads) if
    pruning has not set them already. Returns the module of every layer, in order.

    A module called for several layers (ALBERT shares one) gets `wb_shared_layers`, the layers it
    serves in call order; a pre-hook on the model restarts its call count at every forward, so
    gates and observers see the layer of each call.
    """
    hooks = HeadHooks(discover=True)
    token = _ACTIVE.set(hooks)
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        _ACTIVE.reset(token)
    return number_layers(model, hooks.discovered)


def number_layers(model: torch.nn.Module, calls: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """Number the attention modules of `model` by their call order in one forward (see above)."""
    layers_of: dict[int, list[int]] = {}
    for layer, module in enumerate(calls):
        layers_of.setdefault(id(module), []).append(layer)
    for module in dict.fromkeys(calls):
        layers = layers_of[id(module)]
        module.wb_layer = layers[0]
        if len(layers) > 1:
            module.wb_shared_layers = layers
            module.wb_calls = 0
        elif hasattr(module, "wb_shared_layers"):
            del module.wb_shared_layers
    if any(len(layers) > 1 for layers in layers_of.values()) and not getattr(model, "wb_counts_calls", False):
        model.register_forward_pre_hook(_restart_call_counts)
        model.wb_counts_calls = True
    return calls


def _restart_call_counts(model: torch.nn.Module, args: object) -> None:
    """Before every forward: shared attention modules count their calls from the first layer again."""
    for module in model.modules():
        if getattr(module, "wb_shared_layers", None) is not None:
            module.wb_calls = 0


def workbench_attention(
    module: torch.nn.Module,
    query: torch.Tensor,  # [batch, heads, q_len, head_dim]
    key: torch.Tensor,  # [batch, kv_heads, k_len, head_dim]
    value: torch.Tensor,  # [batch, kv_heads, k_len, head_dim]
    attention_mask: torch.Tensor | None,  # bool [batch, 1, q_len, k_len] (True = attend) or additive, or None
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: object,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    _refuse_unsupported(module, kwargs)
    hooks = _ACTIVE.get()
    if hooks is not None and hooks.discover:
        hooks.discovered.append(module)
    # Counted once per call: a shared module's layer is the next in its call order.
    layer_and_heads = None
    if hooks is not None and (hooks.gates is not None or hooks.observers or hooks.tap) and not hooks.discover:
        layer_and_heads = _layer_and_heads(module, query.shape[1])
    extras = _EagerExtras.read(module, kwargs)
    weights = None
    if hooks is not None and (hooks.observers or hooks.eager or hooks.tap):
        tapped = hooks.tapped if hooks.tap else None
        home = _home(module, query.device)
        output, weights = _eager_attention(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, tapped, home, extras
        )
        layer, head_ids = layer_and_heads or _layer_and_heads(module, query.shape[1])
        if tapped is not None:
            tapped.append((layer, head_ids, weights))
        observed = weights.detach() if home is None else weights.detach().to(home)
        for observe in hooks.observers:
            observe(layer, head_ids, observed)
    elif extras.needs_eager:  # sdpa cannot softcap (it raises) and would silently drop the sinks
        output, weights = _eager_attention(
            module, query, key, value, attention_mask, dropout, scaling, is_causal, extras=extras
        )
    else:
        output, _ = sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    # output: [batch, q_len, heads, head_dim]
    if hooks is not None and hooks.gates is not None:
        output = output * gate_for_layer(hooks.gates, layer_and_heads, output)
    return output, weights


def _refuse_unsupported(module: torch.nn.Module, kwargs: dict) -> None:
    for name, feature in UNSUPPORTED_FEATURES.items():
        if kwargs.get(name) is not None:
            raise ModelError(
                f"{type(module).__name__} uses {feature}, which the workbench attention cannot reproduce: "
                "it would attend to every key instead",
                hint="head steps cannot run on this architecture; steps that read no heads can set "
                "model.attn_implementation: eager",
            )


@dataclass(frozen=True)
class _EagerExtras:
    """What a layer hands the attention function beyond q, k, v and the mask that changes the weights."""

    softcap: float | None = None  # tanh(scores / softcap) * softcap
    position_bias: torch.Tensor | None = None  # added to the scores: [batch | 1, heads, q_len, k_len]
    sinks: torch.Tensor | None = None  # sink logits: [heads] or [batch, heads, q_len, 1]

    @property
    def needs_eager(self) -> bool:
        return self.softcap is not None or self.sinks is not None

    @classmethod
    def read(cls, module: torch.nn.Module, kwargs: dict) -> _EagerExtras:
        softcap = kwargs.get("softcap")
        position_bias = kwargs.get("position_bias")
        sinks = kwargs.get("s_aux")  # every family with learned sinks hands them over (its eager reads module.sinks)
        if sinks is None:
            sinks = kwargs.get("sinks")
        if softcap is not None and not isinstance(softcap, (int, float)):
            raise ModelError(f"{type(module).__name__} passes a softcap the workbench cannot read: {softcap!r}")
        return cls(
            softcap=float(softcap) if softcap is not None else None,
            position_bias=position_bias if isinstance(position_bias, torch.Tensor) else None,
            sinks=sinks if isinstance(sinks, torch.Tensor) else None,
        )


_NO_EXTRAS = _EagerExtras()


def _eager_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float,
    scaling: float | None,
    is_causal: bool | None,
    tapped: list | None = None,
    home: torch.device | None = None,
    extras: _EagerExtras = _NO_EXTRAS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """softmax(cap(q k^T * scale) + bias + mask [, sink]) v, returning the probabilities too.

    Step by step what the families' own `eager_attention_forward` do (see the module docstring);
    the probabilities are the ones `output_attentions=True` returns under eager (sinks dropped).

    With `tapped` (a list), the probabilities get a zero added that requires grad, so they are part
    of the autograd graph even when nothing upstream is (frozen parameters): dL/dA can be taken.
    With `home` as well (a layer on another device than the model's inputs), the tapped
    probabilities are the copy on `home` and the layer computes from that copy moved back, so dL/dA
    is taken of the tensor the caller holds.
    """
    heads = query.shape[1]
    groups = heads // max(key.shape[1], 1)  # query heads per K/V head (0 heads: a fully pruned layer)
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    scores = torch.matmul(query, key.transpose(-1, -2)) * scale  # [batch, heads, q_len, k_len]
    if extras.softcap is not None:
        scores = torch.tanh(scores / extras.softcap) * extras.softcap
    if extras.position_bias is not None:
        scores = scores + _per_head(extras.position_bias, module, heads, dim=1, what="position_bias")
    if attention_mask is None:
        # As sdpa reads it (our mask function is sdpa's): `is_causal`, else the module's (default causal),
        # top-left aligned -- a skipped mask with more keys than queries is a fresh static cache's prefill.
        causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
        q_len, k_len = scores.shape[-2:]
        if causal and q_len > 1:
            attention_mask = torch.ones(q_len, k_len, dtype=torch.bool, device=scores.device).tril()
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask
    # Half precision is upcast to float32 as the families' eager do; float64 stays (their float32 would turn
    # the float64 mask value into -inf and a query whose every key is masked, a pad query beyond a window, into NaN).
    upcast = torch.promote_types(scores.dtype, torch.float32)
    if extras.sinks is not None:
        sinks = extras.sinks
        if sinks.dim() == 1:  # one learned logit per head
            sinks = _per_head(sinks, module, heads, dim=0, what="attention sinks").reshape(1, -1, 1, 1)
        else:  # [batch, heads, q_len, 1], computed from the hidden states
            sinks = _per_head(sinks, module, heads, dim=1, what="attention sinks")
        sinks = sinks.to(device=scores.device, dtype=scores.dtype).expand(*scores.shape[:-1], 1)
        combined = torch.cat([scores, sinks], dim=-1)
        combined = combined - combined.max(dim=-1, keepdim=True).values
        probs = torch.softmax(combined, dim=-1, dtype=upcast)[..., :-1].to(query.dtype)
    else:
        probs = torch.softmax(scores, dim=-1, dtype=upcast).to(query.dtype)
    if tapped is not None:
        probs = probs + torch.zeros((), dtype=probs.dtype, device=probs.device, requires_grad=True)
    used = probs
    if tapped is not None and home is not None:
        probs = probs.to(home)
        used = probs.to(value.device)
    attended = torch.nn.functional.dropout(used, p=dropout, training=module.training)
    output = torch.matmul(attended, value).transpose(1, 2).contiguous()  # [batch, q_len, heads, head_dim]
    return output, probs


def _per_head(tensor: torch.Tensor, module: torch.nn.Module, heads: int, dim: int, what: str) -> torch.Tensor:
    """`tensor` restricted to this layer's heads along `dim`: a pruned layer keeps the unpruned model's
    per-head sinks and biases, and its `wb_head_ids` say which of them are left."""
    size = tensor.shape[dim]
    if size in (1, heads):
        return tensor
    head_ids = getattr(module, "wb_head_ids", None)
    if head_ids is not None:
        head_ids = torch.as_tensor(head_ids, device=tensor.device)
        if len(head_ids) == heads and (heads == 0 or int(head_ids.max()) < size):
            return tensor.index_select(dim, head_ids)
    raise ModelError(
        f"{type(module).__name__} hands the attention {what} for {size} heads to a layer with {heads} heads; "
        "the workbench cannot tell which belong to which head"
    )


def _home(module: torch.nn.Module, here: torch.device) -> torch.device | None:
    """The model's input device when this layer runs elsewhere (a dispatched model), else None."""
    home = getattr(module, "wb_home", None)
    return home if home is not None and home != here else None


def _layer_and_heads(module: torch.nn.Module, num_heads: int) -> tuple[int, torch.Tensor]:
    shared = getattr(module, "wb_shared_layers", None)
    if shared is not None:
        layer = shared[module.wb_calls % len(shared)]
        module.wb_calls += 1
        return layer, _head_ids(module, num_heads)
    layer = getattr(module, "wb_layer", None)
    if layer is None:
        layer = getattr(module, "layer_idx", None)
    if layer is None:
        raise RuntimeError(f"{type(module).__name__} has no layer number; load models with workbench.models.loading")
    return layer, _head_ids(module, num_heads)


def _head_ids(module: torch.nn.Module, num_heads: int) -> torch.Tensor:
    head_ids = getattr(module, "wb_head_ids", None)
    return torch.arange(num_heads) if head_ids is None else head_ids


def gate_for_layer(gates: torch.Tensor, layer_and_heads: tuple[int, torch.Tensor], output: torch.Tensor) -> torch.Tensor:
    """The gates of this layer's heads, shaped to broadcast against [batch, q_len, heads, head_dim]."""
    layer, head_ids = layer_and_heads
    head_ids = head_ids.to(gates.device)
    if gates.dim() == 2:  # [layers, heads]
        gate = gates[layer].index_select(0, head_ids)[None, None, :]
    elif gates.dim() == 3:  # [batch, layers, heads]: one gate per example
        gate = gates[:, layer].index_select(1, head_ids)[:, None, :]
    elif gates.dim() == 4:  # [batch, seq, layers, heads]: one gate per token
        gate = gates[:, :, layer].index_select(2, head_ids)
    else:
        raise ValueError(f"gates must have 2, 3 or 4 dimensions, got {tuple(gates.shape)}")
    # On a model spread over devices this layer may run elsewhere than the gates live: the copy to its
    # device is differentiable, so gate gradients still arrive at the caller's tensor.
    return gate.unsqueeze(-1).to(device=output.device, dtype=output.dtype)
