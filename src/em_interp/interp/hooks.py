"""The public intervention API: ``hooks(lm, {site: fn})``, a context manager on canonical sites.

``fn(activation, site)`` is called with the site's ``[B, T, d]`` tensor (``site`` is the
parsed ``Site``: ``.name``, ``.layer``, ``.kind``, ``.tl_name``) and returns a tensor to
replace it, or ``None`` to leave it (read-only hooks). Site names are ours
(``resid_pre.L``, ``resid_mid.L``, ``resid_post.L``, ``attn_out.L``, ``mlp_out.L``) or the
TransformerLens aliases (``blocks.L.hook_resid_post``); negative layers count from the
end. A site may take a list of functions (applied in order). Hooks are registered on
entry and removed in ``finally``: nested contexts remove only their own, and nothing
leaks after an exception.

Where the hooks live: on an HF / peft model (``LoadedModel``, ``(model, tokenizer)``, an
nnsight ``LanguageModel``'s module) they are torch hooks on the decoder modules
(``resid_pre``: pre-hook of layer L; ``resid_mid``: pre-hook of the pre-MLP norm, written
in place so the residual branch sees the edit; ``resid_post``: output of layer L, before
the final norm; ``attn_out`` / ``mlp_out``: outputs of the attention / MLP modules). On a
TransformerLens model they are forward hooks on its ``HookPoint`` modules. ``steer``,
``ablate`` and ``patch`` are built on this.

``track_positions=True`` makes the yielded ``HookState`` know, under KV-cached
``generate()``, which tokens of the current call are prompt and which are generated
(``state.token_mask(T, tokens, device)``); it costs one pre-hook per forward.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Sequence

from em_interp.errors import InterpError
from em_interp.interp.handles import ModelHandle, as_model
from em_interp.interp.sites import Site, body_of, first_tensor, parse_site, replace_first, site_module

HookFn = Callable[[Any, Site], Any]
EDIT_TOKENS = ("all", "prompt", "response")


@dataclass
class HookState:
    """Where the current forward call sits: ``offset`` = tokens already in the KV cache,
    ``prompt_len`` = length of the last uncached (prompt) call (``None`` before any)."""

    offset: int = 0
    prompt_len: int | None = None

    def token_mask(self, T: int, tokens: str, device: Any):
        """``[T]`` bool mask of the current call's tokens selected by ``tokens`` (``None`` = all)."""
        import torch

        if tokens == "all":
            return None
        if tokens not in EDIT_TOKENS:
            raise InterpError(f"unknown tokens '{tokens}'; valid: {', '.join(EDIT_TOKENS)}", field="tokens")
        pos = torch.arange(self.offset, self.offset + T, device=device)
        is_prompt = pos < (self.prompt_len if self.prompt_len is not None else T)
        return is_prompt if tokens == "prompt" else ~is_prompt


def _past_length(kwargs: dict) -> int:
    cache = kwargs.get("past_key_values")
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    try:  # legacy tuple caches
        return int(cache[0][0].shape[-2])
    except (TypeError, IndexError, AttributeError):
        return 0


def _tracker(handle: ModelHandle, state: HookState):
    """A pre-hook on the model body recording the KV-cache offset of each forward call."""

    def pre(module, args, kwargs):
        past = _past_length(kwargs) if handle.kind == "hf" else 0
        ids = kwargs.get("input_ids", kwargs.get("input", args[0] if args else None))
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        T = ids.shape[1] if hasattr(ids, "shape") and ids.ndim >= 2 else 0
        state.offset = past
        if past == 0:
            state.prompt_len = T

    target = body_of(handle.module) if handle.kind == "hf" else handle.module
    return target.register_forward_pre_hook(pre, with_kwargs=True)


def _chain(fns: Sequence[HookFn], site: Site) -> Callable[[Any], Any]:
    def run(h):
        changed = None
        for fn in fns:
            out = fn(h if changed is None else changed, site)
            if out is not None:
                changed = out
        return changed
    return run


def _register_hf(module: Any, site: Site, run: Callable[[Any], Any]):
    mod = site_module(module, site)
    if site.kind == "resid_pre":
        def pre(m, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            new = run(h)
            if new is None:
                return None
            if args:
                return (new,) + tuple(args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}
        return mod.register_forward_pre_hook(pre, with_kwargs=True)
    if site.kind == "resid_mid":
        def mid(m, args, kwargs):
            h = args[0] if args else kwargs["hidden_states"]
            new = run(h)
            if new is not None and new is not h:
                h.copy_(new)  # in place: the layer's residual branch holds this same tensor
            return None
        return mod.register_forward_pre_hook(mid, with_kwargs=True)

    def post(m, args, output):
        new = run(first_tensor(output))
        return None if new is None else replace_first(output, new)
    return mod.register_forward_hook(post)


def _register_tl(module: Any, site: Site, run: Callable[[Any], Any]):
    point = module.hook_dict.get(site.tl_name)
    if point is None:
        raise InterpError(f"the TransformerLens model has no hook point {site.tl_name}", field="site")

    def post(m, args, output):
        return run(output)
    return point.register_forward_hook(post)


def resolve_sites(handle: ModelHandle, fns: Mapping[Any, HookFn | Sequence[HookFn]]) -> dict[Site, list[HookFn]]:
    """Parse ``{site name: fn | [fn, ...]}`` against the model; equal sites are merged in order."""
    out: dict[Site, list[HookFn]] = {}
    n = handle.n_layers
    for name, fn in fns.items():
        site = parse_site(name, n)
        items = list(fn) if isinstance(fn, (list, tuple)) else [fn]
        if not all(callable(f) for f in items):
            raise InterpError(f"hook for site '{name}' is not callable", field="fns")
        out.setdefault(site, []).extend(items)
    return out


@contextlib.contextmanager
def hooks(lm: Any, fns: Mapping[Any, HookFn | Sequence[HookFn]], *,
          track_positions: bool = False) -> Iterator[HookState]:
    """Run ``fn(activation, site)`` at each site while the context is open (see the module docstring)."""
    handle = as_model(lm)
    sites = resolve_sites(handle, fns)
    state = HookState()
    handles = []
    try:
        if track_positions:
            handles.append(_tracker(handle, state))
        register = _register_tl if handle.kind == "tl" else _register_hf
        for site, items in sites.items():
            handles.append(register(handle.module, site, _chain(items, site)))
        yield state
    finally:
        for h in reversed(handles):
            h.remove()
