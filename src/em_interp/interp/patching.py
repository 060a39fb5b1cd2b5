"""Activation patching on the public hooks: record run A, substitute its activations in run B.

``run_with_cache(lm, inputs, sites)`` runs one padded batch (strings, chats, or a
``[B, T]`` tensor of token ids) and returns a ``RunCache`` with the logits and the full
``[B, T, d]`` activation at each site. ``patch(lm_b, cache)`` is a context manager that
replaces those sites' activations in ``lm_b`` with the recorded ones (all tokens, or the
positions in ``token_index``). Copy every layer's ``resid_post`` from A into B and B's
logits are A's (when both share the unembedding, e.g. a base model and its finetune);
copy one layer to localise where a difference enters.

Both runs must see the same tokens: pass the cache's ``input_ids`` (``cache.input_ids``)
to B, or the same inputs with the same ``prepend_bos``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from em_interp.errors import InterpError
from em_interp.interp.backends import make_backend
from em_interp.interp.handles import ModelHandle, as_model
from em_interp.interp.hooks import hooks
from em_interp.interp.inputs import iter_batches
from em_interp.interp.sites import parse_site


@dataclass
class RunCache:
    """One run's ``logits`` ``[B, T, V]`` and ``activations`` ``{site: [B, T, d]}`` (canonical
    names; indexing also accepts TransformerLens names), plus the tokens it ran on."""

    logits: Any
    activations: dict[str, Any]
    input_ids: Any
    attention_mask: Any
    n_layers: int = 0
    meta: dict = field(default_factory=dict)

    def __getitem__(self, site: Any) -> Any:
        return self.activations[parse_site(site, self.n_layers).name]


def _ids(handle: ModelHandle, inputs: Any, prepend_bos: bool | None, max_length: int | None):
    """``(input_ids, attention_mask, position_ids)`` for ``inputs`` on ``handle`` (one right-padded batch)."""
    import torch

    if isinstance(inputs, torch.Tensor):
        ids = inputs if inputs.ndim == 2 else inputs[None]
        ids = ids.to(handle.device)
        att = torch.ones_like(ids)
        return ids, att, (att.cumsum(1) - 1)
    if isinstance(inputs, str):
        inputs = [inputs]
    runner = make_backend(handle)
    bos = runner.default_prepend_bos if prepend_bos is None else prepend_bos
    (batch,) = list(iter_batches(runner.tokenizer, list(inputs), batch_size=max(1, len(inputs)), max_length=max_length,
                                 device=handle.device, sort_by_length=False, prepend_bos=bos))
    return batch.input_ids, batch.attention_mask, batch.position_ids


def forward_logits(lm: Any, input_ids: Any, attention_mask: Any = None, position_ids: Any = None):
    """Logits ``[B, T, V]`` of one forward pass on an HF / peft or TransformerLens model (hooks apply)."""
    import torch

    handle = as_model(lm)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    with torch.no_grad():
        if handle.kind == "tl":
            extra = {"position_ids": position_ids} if type(handle.module).__name__ == "TransformerBridge" else {}
            return handle.module(input_ids, attention_mask=attention_mask, **extra)
        return handle.module(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=False).logits


def run_with_cache(lm: Any, inputs: Any, sites: Sequence[Any] = (), *, prepend_bos: bool | None = None,
                   max_length: int | None = None) -> RunCache:
    """Logits and the full activations at ``sites`` for one batch of ``inputs`` (strings, chats or ids)."""
    handle = as_model(lm)
    ids, att, pos = _ids(handle, inputs, prepend_bos, max_length)
    acts: dict[str, Any] = {}

    def record(h, site):
        acts[site.name] = h.detach().clone()

    with hooks(handle, {s: record for s in sites}):
        logits = forward_logits(handle, ids, att, pos)
    return RunCache(logits=logits, activations=acts, input_ids=ids, attention_mask=att, n_layers=handle.n_layers,
                    meta={"model": handle.name, "sites": list(acts)})


@contextlib.contextmanager
def patch(lm: Any, activations: RunCache | Mapping[Any, Any], *, sites: Sequence[Any] | None = None,
          token_index: int | Sequence[int] | None = None) -> Iterator[list[str]]:
    """Replace the activations at ``sites`` (default: every site in ``activations``) with the
    recorded ``[B, T, d]`` tensors while the context is open; ``token_index`` limits the copy
    to those positions. Yields the patched site names. Shapes must match the run's."""
    handle = as_model(lm)
    source = activations.activations if isinstance(activations, RunCache) else dict(activations)
    by_site = {parse_site(k, handle.n_layers).name: v for k, v in source.items()}
    chosen = list(by_site) if sites is None else [parse_site(s, handle.n_layers).name for s in sites]
    missing = [s for s in chosen if s not in by_site]
    if missing:
        raise InterpError(f"no recorded activation for {missing[0]}; recorded: {sorted(by_site)}", field="sites")
    idx = [token_index] if isinstance(token_index, int) else token_index

    def make(name: str):
        def replace(h, site):
            src = by_site[name].to(device=h.device, dtype=h.dtype)
            if src.shape != h.shape:
                raise InterpError(f"patch {name}: recorded shape {tuple(src.shape)} != this run's {tuple(h.shape)} "
                                  "(run both on the same tokens)", field="activations")
            if idx is None:
                return src
            out = h.clone()
            out[:, idx] = src[:, idx]
            return out
        return replace

    with hooks(handle, {name: make(name) for name in chosen}):
        yield chosen
