"""Per-token activations the diff report needs, from one forward pass with forward hooks.

``layer_activations(lm, input_ids, attention_mask)`` returns, for every decoder layer L,
the residual stream after the layer (``resid_post.L``, before the final norm — note that
``output_hidden_states`` in transformers 5 gives the *normed* state for the last layer),
the attention output (``attn_out.L``) and the MLP output (``mlp_out.L``), each ``[B, T, d]``.
``unembed(lm, h)`` applies the model's final norm and unembedding (the logit lens).

This is the one place the report touches model internals; it is kept small so it can be
swapped for ``em_interp.interp`` per-token capture.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from em_interp.report.errors import ReportError


@dataclass
class LayerActivations:
    """Per-token activations of one batch: lists indexed by layer, tensors ``[B, T, d]``."""

    resid_post: list[torch.Tensor]
    attn_out: list[torch.Tensor]
    mlp_out: list[torch.Tensor]


def causal_lm(model):
    """The underlying ``*ForCausalLM`` module (unwraps a peft ``PeftModel``)."""
    if hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def _decoder(model):
    lm = causal_lm(model)
    inner = getattr(lm, "model", None)
    layers = getattr(inner, "layers", None)
    if layers is None or not hasattr(inner, "norm"):
        raise ReportError(f"unsupported architecture {type(lm).__name__}: expected .model.layers and .model.norm")
    return inner


def layer_activations(lm, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> LayerActivations:
    """Run ``lm.model`` once on the batch and return every layer's resid_post / attn_out / mlp_out."""
    inner = _decoder(lm.model)
    n = len(inner.layers)
    resid: list[torch.Tensor | None] = [None] * n
    attn: list[torch.Tensor | None] = [None] * n
    mlp: list[torch.Tensor | None] = [None] * n

    def store(buf, i):
        def hook(_module, _inp, out):
            buf[i] = (out[0] if isinstance(out, tuple) else out).detach()
        return hook

    handles = []
    try:
        for i, layer in enumerate(inner.layers):
            handles.append(layer.register_forward_hook(store(resid, i)))
            handles.append(layer.self_attn.register_forward_hook(store(attn, i)))
            handles.append(layer.mlp.register_forward_hook(store(mlp, i)))
        with torch.no_grad():
            lm.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return LayerActivations(resid_post=resid, attn_out=attn, mlp_out=mlp)  # type: ignore[arg-type]


def unembed(lm, h: torch.Tensor) -> torch.Tensor:
    """Logit lens: the model's final norm then its unembedding, applied to residuals ``h``."""
    inner = _decoder(lm.model)
    with torch.no_grad():
        return causal_lm(lm.model).get_output_embeddings()(inner.norm(h))
