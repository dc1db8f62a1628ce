"""Heads of models that do not dispatch through Transformers' attention interface: through the output projection.

OpenAI GPT, DeBERTa-v2, GPT-Neo, BLOOM and Falcon compute attention inline (Transformers 5.24), so the
workbench attention function is never called. A head's output still reaches the model only through
the attention block's output projection, whose INPUT is the concatenation of the heads,
[batch, seq, heads * head_dim]: a forward pre-hook on that projection that multiplies each head's
slice by its gate is exactly Michel et al.'s xi_h (a hook after the projection could not tell the
heads apart). The projection is the one the family adapter names (workbench/models/families/).

Attention probabilities come from the model's own eager attention: while observers are installed,
a pre-hook on the backbone asks it for `output_attentions=True`, and a forward hook hands each
layer's probabilities to the observers (and drops them from the output when the caller did not ask
for them). To take dL/dA (`head_hooks(tap=True)`), the input embeddings get a zero that requires
grad, so the probabilities are in the autograd graph even when every parameter is frozen.

Everything reads the same `head_hooks` context as the attention-interface path; the hooks stay on
the model and do nothing outside a `head_hooks` block. The state they need lives in plain attributes
(no closures), so a deep copy of the model keeps working hooks of its own.
"""

from __future__ import annotations

import torch
from torch import nn

from workbench.models.attention import _ACTIVE, _layer_and_heads, gate_for_layer, number_layers
from workbench.models.families import HeadAdapter, config_head_dim, find_adapter

HOOKED = "wb_projection_heads"  # set on the backbone once its hooks are installed


def find_projection_heads(model: nn.Module, input_ids: torch.Tensor) -> list[nn.Module]:
    """The attention modules of `model` a layout adapter knows, numbered in call order (one tiny forward).

    Returns the module of every call in order (one per layer unless the model is an encoder-decoder)."""
    adapters = _adapters(model)
    calls: list[nn.Module] = []
    handles = [
        adapter.module.register_forward_pre_hook(lambda module, args: calls.append(module)) for adapter in adapters.values()
    ]
    try:
        with torch.no_grad():
            model(input_ids=input_ids)
    finally:
        for handle in handles:
            handle.remove()
    return calls


def install_projection_heads(model: nn.Module, modules: list[nn.Module]) -> None:
    """Number `modules` as the layers and hook their output projections and the backbone (idempotent)."""
    number_layers(model, modules)
    adapters = _adapters(model)
    for module in dict.fromkeys(modules):
        adapter = adapters[id(module)]
        projection = adapter.output
        # A tuple, not the module itself: an nn.Module attribute would register a second parent.
        projection.__dict__["wb_gated_heads"] = (module, adapter.head_dim)
        if not getattr(projection, "wb_gate_hooked", False):
            projection.register_forward_pre_hook(_gate_heads)
            projection.wb_gate_hooked = True
    backbone = _backbone(model)
    if not getattr(backbone, HOOKED, False):
        backbone.register_forward_pre_hook(_ask_for_attentions, with_kwargs=True)
        backbone.register_forward_hook(_observe_attentions)
        embeddings = model.get_input_embeddings()
        embeddings.register_forward_hook(_into_the_graph)
        setattr(backbone, HOOKED, True)
    backbone.__dict__["wb_layer_modules"] = tuple(modules)


def _adapters(model: nn.Module) -> dict[int, HeadAdapter]:
    head_dim = config_head_dim(model)
    found: dict[int, HeadAdapter] = {}
    for name, module in model.named_modules():
        parent = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        adapter = find_adapter(module, parent, head_dim)
        if adapter is not None:
            found[id(module)] = adapter
    return found


def _backbone(model: nn.Module) -> nn.Module:
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) else model


def _observing(hooks: object) -> bool:
    return hooks is not None and not hooks.discover and bool(hooks.observers or hooks.tap)


def _gate_heads(projection: nn.Module, args: tuple) -> tuple | None:
    """Pre-hook of an output projection: x [batch, seq, heads * head_dim] -> each head's slice times its gate."""
    hooks = _ACTIVE.get()
    if hooks is None or hooks.gates is None:
        return None
    module, head_dim = projection.__dict__["wb_gated_heads"]
    x = args[0]
    heads = x.shape[-1] // head_dim
    per_head = x.view(*x.shape[:-1], heads, head_dim)  # [batch, seq, heads, head_dim]
    gate = gate_for_layer(hooks.gates, _layer_and_heads(module, heads), per_head)
    return ((per_head * gate).view(x.shape), *args[1:])


def _ask_for_attentions(backbone: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
    if not _observing(_ACTIVE.get()):
        return None
    backbone.__dict__["wb_caller_asked"] = bool(kwargs.get("output_attentions"))
    return args, {**kwargs, "output_attentions": True}


def _observe_attentions(backbone: nn.Module, args: tuple, output: object) -> object:
    """Hand each layer's probabilities [batch, heads, q_len, k_len] to the observers (and the tap)."""
    hooks = _ACTIVE.get()
    if not _observing(hooks):
        return None
    attentions = output.get("attentions") if hasattr(output, "get") else None
    modules = backbone.__dict__["wb_layer_modules"]
    if attentions is None or len(attentions) != len(modules):
        from workbench.errors import ModelError

        raise ModelError(f"{type(backbone).__name__} returned no attention probabilities for output_attentions=True")
    for module, probs in zip(modules, attentions):
        layer, head_ids = _layer_and_heads(module, probs.shape[1])
        home = getattr(module, "wb_home", None)  # a model spread over devices: where the inputs are
        if home is not None and probs.device != home:
            probs = probs.to(home)
        if hooks.tap:
            hooks.tapped.append((layer, head_ids, probs))
        for observe in hooks.observers:
            observe(layer, head_ids, probs.detach())
    if not backbone.__dict__.pop("wb_caller_asked", False):
        output["attentions"] = None
    return output


def _into_the_graph(embeddings: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """With a tap: a zero that requires grad, so dL/dA exists with frozen parameters."""
    hooks = _ACTIVE.get()
    if hooks is None or not hooks.tap or not torch.is_grad_enabled():
        return None
    return output + torch.zeros((), dtype=output.dtype, device=output.device, requires_grad=True)
