"""Paired forward passes and the logit lens: two models' activations on identical tokens.

``paired_batches(base_lm, ft_lm, texts)`` tokenizes the texts once (``iter_batches``:
chat template, right padding, explicit positions) and, for every batch, runs both models
through an interp backend, yielding each layer's ``resid_post`` (before the final norm),
``attn_out`` and ``mlp_out`` as ``[B, T, d]`` tensors plus the token mask to average over.
``logit_lens(lm, h)`` applies the model's final norm and unembedding to residuals ``h``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from em_interp.errors import InterpError
from em_interp.interp.backends import make_backend
from em_interp.interp.inputs import iter_batches, resolve_tokens
from em_interp.interp.sites import body_of, parse_sites, unwrap

KINDS = ("resid_post", "attn_out", "mlp_out")
DIFF_TOKENS = ("all", "prompt", "response")


@dataclass
class PairedBatch:
    """Per-layer activations (``acts[model][kind][L]``: ``[B, T, d]``) and the ``[B, T]`` token mask."""

    base: dict[str, list[torch.Tensor]]
    finetuned: dict[str, list[torch.Tensor]]
    mask: torch.Tensor


def _run(runner: Any, batch: Any, sites: list, n_layers: int) -> dict[str, list[torch.Tensor]]:
    out: dict[str, list[Any]] = {k: [None] * n_layers for k in KINDS}

    def consume(site, hidden) -> None:
        out[site.kind][site.layer] = hidden.detach().clone()

    runner.run(batch, sites, consume)
    return out  # type: ignore[return-value]


def _on(batch: Any, device: Any) -> Any:
    if batch.input_ids.device == torch.device(device):
        return batch
    return dataclasses.replace(batch, **{f: getattr(batch, f).to(device) for f in
                                         ("input_ids", "attention_mask", "position_ids", "prompt_mask",
                                          "response_mask")})


def paired_batches(base_lm: Any, ft_lm: Any, texts: Sequence[Any], *, batch_size: int = 4,
                   max_length: int | None = 256, tokens: str = "all", backend: str = "hf") -> Iterator[PairedBatch]:
    """Yield both models' activations on identical token batches (see the module docstring)."""
    tokens = resolve_tokens(tokens, allowed=DIFF_TOKENS)
    n = base_lm.n_layers
    sites = parse_sites([f"{k}.{L}" for L in range(n) for k in KINDS], n)
    run_b, run_f = make_backend(base_lm, backend), make_backend(ft_lm, backend)
    for batch in iter_batches(base_lm.tokenizer, texts, batch_size=batch_size, padding_side="right",
                              max_length=max_length, device=base_lm.device):
        mask = {"all": batch.attention_mask.bool(), "prompt": batch.prompt_mask,
                "response": batch.response_mask}[tokens].bool()
        yield PairedBatch(base=_run(run_b, batch, sites, n), finetuned=_run(run_f, _on(batch, ft_lm.device), sites, n),
                          mask=mask)


def logit_lens(lm: Any, h: torch.Tensor) -> torch.Tensor:
    """Logit lens: the model's final norm then its unembedding, applied to residuals ``h``."""
    norm = getattr(body_of(lm.model), "norm", None)
    if norm is None:
        raise InterpError(f"cannot find the final norm of {type(unwrap(lm.model)).__name__} (expected model.norm)")
    with torch.no_grad():
        return unwrap(lm.model).get_output_embeddings()(norm(h))
