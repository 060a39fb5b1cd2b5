"""``capture``: site activations averaged over selected tokens, streamed.

For every requested site the reduction happens inside the hook: each example's selected
tokens are averaged (or one token picked) at once, and only running sums are kept, so
memory is O(sites x d_model) however many examples (plus O(n x d_model) when
``per_example=True``). ``tokens`` (one word for token selection everywhere):

- ``"response"`` (default): the response tokens (last assistant turn) of each example; a
  plain string's tokens count as response, so plain strings reduce over all their tokens;
- ``"prompt"``: the prompt tokens; ``"all"``: every non-pad token;
- ``"last_prompt"``: the last prompt token (the end of the generation prompt).

``per_token=True`` keeps the selected tokens unreduced (``per_example`` holds ``[T_i, d]``
tensors). The result for a site is the mean over examples of the per-example means
(every example weighs the same). ``reduce=`` is the deprecated spelling
(``response_mean``/``prompt_mean``/``all_mean``/``last_prompt``/``none``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from em_interp.errors import InterpError
from em_interp.interp.backends import Backend, make_backend
from em_interp.interp.handles import as_model
from em_interp.interp.inputs import TOKENS, Batch, iter_batches, resolve_tokens
from em_interp.interp.sites import Site, parse_site, parse_sites
from em_interp.progress import Progress

REDUCTIONS = TOKENS  # kept for importers of the old name


@dataclass
class Capture(Mapping):
    """What ``capture`` returns: a read-only mapping ``site -> [d]`` mean over examples.

    ``mean[site]``: ``[d]`` mean; ``per_example[site]``: ``[n, d]`` in input order (with
    ``per_example=True``; a list of ``[T_i, d]`` for ``per_token=True``); ``n``: examples;
    ``sites``: canonical names; ``tokens``: the token rule. Indexing accepts the names the
    caller asked for (``capture(...)["blocks.1.hook_resid_post"]``) as well as canonical ones."""

    mean: dict[str, Any]
    per_example: dict[str, Any]
    n: int
    sites: list[str] = field(default_factory=list)
    tokens: str = "response"
    aliases: dict[str, str] = field(default_factory=dict, repr=False)

    def __getitem__(self, site: Any) -> Any:
        key = str(site)
        return self.mean[self.aliases.get(key, key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self.mean)

    def __len__(self) -> int:
        return len(self.mean)


def token_weights(batch: Batch, tokens: str):
    """``[B, T]`` float weights whose rows sum to 1 for the chosen token rule."""
    import torch

    if tokens == "response":
        mask = batch.response_mask
    elif tokens == "prompt":
        mask = batch.prompt_mask
    elif tokens == "all":
        mask = batch.attention_mask.bool()
    elif tokens == "last_prompt":
        T = batch.prompt_mask.shape[1]
        pos = torch.arange(T, device=batch.prompt_mask.device).expand_as(batch.prompt_mask)
        last = torch.where(batch.prompt_mask, pos, torch.full_like(pos, -1)).max(dim=1).values
        mask = pos == last[:, None]
    else:
        raise InterpError(f"unknown tokens '{tokens}'; valid: {', '.join(TOKENS)}", field="tokens")
    counts = mask.sum(dim=1)
    if (counts == 0).any():
        bad = batch.indices[int((counts == 0).nonzero()[0])]
        what = "response tokens (is the last turn an assistant answer?)" if tokens == "response" else "tokens"
        raise InterpError(f"example {bad} has no {what} for tokens='{tokens}'", field=f"examples[{bad}]")
    w = mask.float()
    return w / counts[:, None].float()


def capture(
    lm: Any,
    examples: Sequence[Any],
    sites: str | Site | Sequence[str | Site],
    *,
    tokens: str | None = None,
    per_example: bool = False,
    per_token: bool = False,
    backend: str | Backend | None = None,
    batch_size: int = 8,
    padding_side: str = "right",
    max_length: int | None = None,
    prepend_bos: bool | None = None,
    reduce: str | None = None,
    progress: bool | None = None,
    desc: str = "capture",
) -> Capture:
    """Activations of ``lm`` on ``examples`` at ``sites``, averaged over ``tokens`` per example.

    ``lm``: a ``LoadedModel``, ``(hf_or_peft_model, tokenizer)``, an nnsight ``LanguageModel``
    or a TransformerLens ``HookedTransformer`` / ``TransformerBridge``. ``sites``: canonical
    or TransformerLens names, negative layers allowed. Returns a ``Capture`` (a mapping
    ``site -> Tensor[d]``, float32 on CPU). ``prepend_bos``: ``None`` = the backend's
    convention (the tokenizer's for ``hf`` / ``nnsight``, TransformerLens's
    ``default_prepend_bos`` for ``transformer_lens``). ``reduce=`` is the deprecated
    spelling of ``tokens`` (``reduce="none"`` = ``per_token=True``). ``progress``: a bar named
    ``desc`` with examples/s and tokens/s (``None``: when stderr is a terminal; see
    ``em_interp.progress``).
    """
    import torch

    if reduce == "none":
        per_token = True
    tokens = resolve_tokens(tokens, reduce=reduce)
    per_example = per_example or per_token
    if isinstance(examples, (str, bytes)) or len(examples) == 0:
        raise InterpError("examples must be a non-empty list (of strings, chats or ChatExamples)", field="examples")
    handle = as_model(lm)
    requested = [sites] if isinstance(sites, (str, Site)) else list(sites)
    parsed = parse_sites(requested, handle.n_layers)
    aliases = {str(r): parse_site(r, handle.n_layers).name for r in requested}
    runner = make_backend(handle, backend)
    bos = runner.default_prepend_bos if prepend_bos is None else prepend_bos
    n = len(examples)
    sums: dict[Site, Any] = {}
    rows: dict[Site, Any] = {}

    with Progress(n, desc, "example", progress=progress) as bar:
        for batch in iter_batches(runner.tokenizer, examples, batch_size=batch_size, padding_side=padding_side,
                                  max_length=max_length, device=handle.device, prepend_bos=bos):
            weights = token_weights(batch, tokens)

            def consume(site: Site, hidden, batch=batch, weights=weights) -> None:
                h = hidden.detach().float()
                if per_token:
                    store = rows.setdefault(site, [None] * n)
                    for j, i in enumerate(batch.indices):
                        store[i] = h[j][weights[j] > 0].cpu()
                    return
                red = torch.einsum("btd,bt->bd", h, weights.to(h.device))
                acc = sums.get(site)
                sums[site] = red.sum(0).double() if acc is None else acc + red.sum(0).double()
                if per_example:
                    store = rows.setdefault(site, torch.zeros(n, red.shape[1]))
                    store[torch.tensor(batch.indices)] = red.cpu()

            runner.run(batch, parsed, consume)
            bar.update(len(batch.indices), tokens=int(batch.attention_mask.sum()))

    if per_token:
        mean = {s.name: torch.stack([r.mean(0) for r in rows[s]]).mean(0) for s in parsed}
    else:
        mean = {s.name: (sums[s] / n).float().cpu() for s in parsed}
    return Capture(mean=mean, per_example={s.name: rows[s] for s in parsed} if per_example else {}, n=n,
                   sites=[s.name for s in parsed], tokens=tokens, aliases=aliases)
