"""``capture``: site activations reduced over chosen token positions, streamed.

For every requested site the reduction happens inside the hook: each example's tokens
are averaged (or one token picked) at once, and only running sums are kept, so memory
is O(sites x d_model) however many examples (plus O(n x d_model) when
``per_example=True``). Reductions:

- ``response_mean``: mean over the response tokens (last assistant turn) of each example;
- ``last_prompt``: the last prompt token (the end of the generation prompt);
- ``prompt_mean``: mean over the prompt tokens;
- ``all_mean``: mean over all (non-pad) tokens;
- ``none``: no reduction; ``per_example`` results are lists of ``[T_i, d]`` tensors.

The result for a site is the mean over examples of the per-example reductions (every
example weighs the same).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from em_interp.errors import InterpError
from em_interp.interp.backends import Backend, make_backend
from em_interp.interp.inputs import Batch, iter_batches
from em_interp.interp.sites import Site, n_layers_of, parse_sites

REDUCTIONS = ("response_mean", "last_prompt", "prompt_mean", "all_mean", "none")


@dataclass
class Capture:
    """What ``capture(..., per_example=True)`` returns.

    ``mean[site]``: ``[d]`` mean over examples; ``per_example[site]``: ``[n, d]`` in the
    input order (a list of ``[T_i, d]`` tensors for ``reduce="none"``); ``n``: examples."""

    mean: dict[str, Any]
    per_example: dict[str, Any]
    n: int
    sites: list[str] = field(default_factory=list)


def token_weights(batch: Batch, reduce: str):
    """``[B, T]`` float weights whose rows sum to 1 for the chosen reduction."""
    import torch

    if reduce == "response_mean":
        mask = batch.response_mask
    elif reduce == "prompt_mean":
        mask = batch.prompt_mask
    elif reduce in ("all_mean", "none"):
        mask = batch.attention_mask.bool()
    elif reduce == "last_prompt":
        T = batch.prompt_mask.shape[1]
        pos = torch.arange(T, device=batch.prompt_mask.device).expand_as(batch.prompt_mask)
        last = torch.where(batch.prompt_mask, pos, torch.full_like(pos, -1)).max(dim=1).values
        mask = pos == last[:, None]
    else:
        raise InterpError(f"unknown reduce '{reduce}'; valid: {', '.join(REDUCTIONS)}", field="reduce")
    counts = mask.sum(dim=1)
    if (counts == 0).any():
        bad = batch.indices[int((counts == 0).nonzero()[0])]
        what = "response tokens (is the last turn an assistant answer?)" if reduce == "response_mean" else "tokens"
        raise InterpError(f"example {bad} has no {what} for reduce='{reduce}'", field=f"examples[{bad}]")
    w = mask.float()
    return w / counts[:, None].float()


def capture(
    lm: Any,
    examples: Sequence[Any],
    sites: str | Site | Sequence[str | Site],
    *,
    reduce: str = "response_mean",
    backend: str | Backend = "hf",
    batch_size: int = 8,
    per_example: bool = False,
    padding_side: str = "right",
    max_length: int | None = None,
) -> dict[str, Any] | Capture:
    """Activations of ``lm`` on ``examples`` at ``sites`` reduced with ``reduce``.

    Returns ``{site: Tensor[d_model]}`` (float32, on CPU), the mean over examples of each
    example's reduced vector; with ``per_example=True`` a ``Capture`` that also holds the
    ``[n, d]`` per-example vectors. ``reduce="none"`` requires ``per_example=True``.
    """
    import torch

    if reduce not in REDUCTIONS:
        raise InterpError(f"unknown reduce '{reduce}'; valid: {', '.join(REDUCTIONS)}", field="reduce")
    if reduce == "none" and not per_example:
        raise InterpError("reduce='none' keeps every token: pass per_example=True", field="reduce")
    if len(examples) == 0:
        raise InterpError("no examples to capture", field="examples")
    parsed = parse_sites(sites, n_layers_of(lm.model))
    runner = make_backend(lm, backend)
    n = len(examples)
    sums: dict[Site, Any] = {}
    rows: dict[Site, Any] = {}
    device = next(lm.model.parameters()).device

    for batch in iter_batches(lm.tokenizer, examples, batch_size=batch_size, padding_side=padding_side,
                              max_length=max_length, device=device):
        weights = token_weights(batch, reduce)

        def consume(site: Site, hidden, batch=batch, weights=weights) -> None:
            h = hidden.detach().float()
            if reduce == "none":
                store = rows.setdefault(site, [None] * n)
                for j, i in enumerate(batch.indices):
                    store[i] = h[j][batch.attention_mask[j].bool()].cpu()
                return
            red = torch.einsum("btd,bt->bd", h, weights.to(h.device))
            acc = sums.get(site)
            sums[site] = red.sum(0).double() if acc is None else acc + red.sum(0).double()
            if per_example:
                store = rows.setdefault(site, torch.zeros(n, red.shape[1]))
                store[torch.tensor(batch.indices)] = red.cpu()

        runner.run(batch, parsed, consume)

    if reduce == "none":
        mean = {s.name: torch.stack([r.mean(0) for r in rows[s]]).mean(0) for s in parsed}
    else:
        mean = {s.name: (sums[s] / n).float().cpu() for s in parsed}
    if not per_example:
        return mean
    return Capture(mean=mean, per_example={s.name: rows[s] for s in parsed}, n=n, sites=[s.name for s in parsed])
