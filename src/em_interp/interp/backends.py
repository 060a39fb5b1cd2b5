"""Three ways to run a batch and read site activations: ``hf``, ``transformer_lens``, ``nnsight``.

All backends take the same padded batch (explicit attention mask and position ids) and
call ``fn(site, tensor[B, T, d])`` once per requested site, in execution order, with the
same numbers (to float tolerance). ``hf`` is the fast default: read-only ``interp.hooks``
on the needed modules only, the forward stops after the last needed layer, no logits are
computed, nothing is cached beyond what ``fn`` keeps. ``transformer_lens`` uses a
TransformerLens model as given (``HookedTransformer`` / ``TransformerBridge``), or boots a
``TransformerBridge`` on a deep copy of an HF model (the bridge mutates the module it is
given and edits the tokenizer's init kwargs: both are copied; peft adapters are merged
into the copy first). ``nnsight`` uses a given ``LanguageModel`` or wraps the plain HF
module (adapters stay active).

``make_backend`` caches what it builds per model object (weakly): a second call on the
same, unchanged model reuses the bridge instead of copying the model again. A change to
the weights (any parameter's in-place version counter) or to the active peft adapters
rebuilds it.
"""

from __future__ import annotations

import copy
import weakref
from typing import Any, Callable, Sequence

from em_interp.errors import InterpError
from em_interp.interp.handles import ModelHandle, as_model
from em_interp.interp.inputs import Batch
from em_interp.interp.sites import Site, body_of, unwrap

BACKENDS = ("hf", "transformer_lens", "nnsight")
SiteFn = Callable[[Site, Any], None]


class _StopForward(Exception):
    """Raised by the last needed hook to skip the rest of the forward pass."""


class Backend:
    """Runs batches on one model. Build once with ``make_backend`` and reuse across calls.

    ``tokenizer`` is the one inputs are encoded with; ``default_prepend_bos`` the BOS rule
    when the caller gives none (``None`` = the tokenizer's own convention)."""

    name = "base"
    default_prepend_bos: bool | None = None

    def __init__(self, model: Any, tokenizer: Any, lm_name: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.lm_name = lm_name

    def run(self, batch: Batch, sites: Sequence[Site], fn: SiteFn) -> None:  # pragma: no cover
        raise NotImplementedError


class HFBackend(Backend):
    """Read-only ``interp.hooks`` on the plain HF module (the default)."""

    name = "hf"

    def run(self, batch: Batch, sites: Sequence[Site], fn: SiteFn) -> None:
        import torch

        from em_interp.interp.hooks import hooks

        last = sites[-1]  # sites come in execution order (parse_sites)

        def make(site: Site):
            def read(h, _site):
                fn(site, h)
                if site == last:
                    raise _StopForward  # skip the rest of the forward pass
            return read

        with hooks(self.model, {site: make(site) for site in sites}):
            with torch.inference_mode():
                try:
                    body_of(self.model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                        position_ids=batch.position_ids, use_cache=False)  # no LM head
                except _StopForward:
                    pass


class TransformerLensBackend(Backend):
    """TransformerLens (hook names ``blocks.L.hook_resid_post``...): a given TL model, or a
    ``TransformerBridge`` booted on a deep copy of an HF model. BOS: TransformerLens's
    ``default_prepend_bos`` with its tokenizer (BOS, else EOS)."""

    name = "transformer_lens"

    def __init__(self, model: Any, tokenizer: Any, lm_name: str | None = None) -> None:
        super().__init__(model, tokenizer, lm_name)
        from em_interp.interp.handles import is_transformer_lens

        if is_transformer_lens(model):
            self.tl = model
        else:
            from transformer_lens.model_bridge import TransformerBridge

            hf = copy.deepcopy(unwrap(model) if not _is_peft(model) else model)
            if _is_peft(hf):
                hf = hf.merge_and_unload()
            self.tl = TransformerBridge.boot_transformers(
                lm_name or getattr(hf.config, "_name_or_path", "") or "model", hf_model=hf,
                tokenizer=copy.deepcopy(tokenizer), device=str(next(hf.parameters()).device))
        self.bridge = self.tl
        self.model = self.tl  # no reference to the HF original: the per-model cache holds it weakly
        self.tokenizer = getattr(self.tl, "tokenizer", None) or tokenizer
        self.default_prepend_bos = bool(getattr(self.tl.cfg, "default_prepend_bos", True))
        self.is_bridge = type(self.tl).__name__ == "TransformerBridge"

    def forward(self, batch: Batch, **kw: Any) -> Any:
        """One TransformerLens forward on the batch (position ids passed where the model takes them)."""
        extra = {"position_ids": batch.position_ids} if self.is_bridge else {}
        return self.tl(batch.input_ids, attention_mask=batch.attention_mask, **extra, **kw)

    def run(self, batch: Batch, sites: Sequence[Site], fn: SiteFn) -> None:
        import torch

        from em_interp.interp.hooks import hooks

        with hooks(self.tl, {site: (lambda h, s: fn(s, h)) for site in sites}):
            with torch.inference_mode():
                self.forward(batch, return_type=None, stop_at_layer=max(s.layer for s in sites) + 1)


class NNsightBackend(Backend):
    """nnsight ``LanguageModel`` over the plain HF module; ``.output`` of a layer is a tensor."""

    name = "nnsight"

    def __init__(self, model: Any, tokenizer: Any, lm_name: str | None = None, wrapper: Any = None) -> None:
        super().__init__(model, tokenizer, lm_name)
        import warnings

        from nnsight import LanguageModel

        if wrapper is not None:
            self.nn = wrapper
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.nn = LanguageModel(unwrap(model), tokenizer=tokenizer)

    def _envoy(self, site: Site):
        layer = self.nn.model.layers[site.layer]
        if site.kind == "resid_pre":
            return layer.input
        if site.kind == "resid_mid":
            norm = "pre_feedforward_layernorm" if hasattr(layer, "pre_feedforward_layernorm") else \
                "post_attention_layernorm"
            return getattr(layer, norm).input
        if site.kind == "attn_out":
            return layer.self_attn.output[0]
        if site.kind == "mlp_out":
            return layer.mlp.output
        return layer.output

    def run(self, batch: Batch, sites: Sequence[Site], fn: SiteFn) -> None:
        import torch

        saved = []
        with torch.no_grad():
            with self.nn.trace({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask},
                               position_ids=batch.position_ids, use_cache=False):
                for site in sites:  # sites arrive in execution order, as nnsight requires
                    saved.append(self._envoy(site).save())
        for site, value in zip(sites, saved):
            fn(site, value.detach())


def _is_peft(model: Any) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, PeftModel)


_CACHE: "weakref.WeakKeyDictionary[Any, dict[str, tuple[Any, Backend]]]" = weakref.WeakKeyDictionary()


def _fingerprint(module: Any) -> tuple:
    """Cheap identity of a model's current weights: parameter version counters + active adapters."""
    versions = sum(p._version for p in module.parameters())
    adapters = getattr(module, "active_adapters", None)
    adapters = tuple(adapters) if isinstance(adapters, (list, tuple)) else adapters
    return versions, adapters, getattr(module, "merged", None)


def default_backend(lm: Any) -> str:
    """``"transformer_lens"`` for a TransformerLens model, else ``"hf"``."""
    return "transformer_lens" if as_model(lm).kind == "tl" else "hf"


def make_backend(lm: Any, backend: str | Backend | None = None) -> Backend:
    """A (cached) backend for ``lm`` (anything ``as_model`` takes); an existing ``Backend`` passes through.

    ``backend=None`` picks ``transformer_lens`` for TransformerLens models and ``hf`` otherwise."""
    if isinstance(backend, Backend):
        return backend
    handle: ModelHandle = as_model(lm)
    backend = backend or default_backend(handle)
    classes = {"hf": HFBackend, "transformer_lens": TransformerLensBackend, "nnsight": NNsightBackend}
    if backend not in classes:
        raise InterpError(f"unknown backend '{backend}'; valid backends: {', '.join(BACKENDS)}", field="backend")
    if handle.kind == "tl" and backend != "transformer_lens":
        raise InterpError(f"a TransformerLens model runs on the transformer_lens backend, not '{backend}'",
                          field="backend")
    tok = handle.require_tokenizer()
    if backend == "hf":
        return HFBackend(handle.module, tok, handle.name)
    name = getattr(handle.source, "path", None) or handle.name
    if backend == "nnsight":  # cheap: wraps the module itself, nothing copied
        wrapper = handle.source if type(handle.source).__module__.startswith("nnsight") else None
        return NNsightBackend(handle.module, tok, name, wrapper=wrapper)
    if handle.kind == "tl":
        return TransformerLensBackend(handle.module, tok, name)
    key = handle.module  # a bridge on a deep copy: built once per model object and weights
    fp = _fingerprint(key)
    hit = _CACHE.get(key, {}).get(backend)
    if hit is not None and hit[0] == fp:
        return hit[1]
    built = TransformerLensBackend(handle.module, tok, name)
    _CACHE.setdefault(key, {})[backend] = (fp, built)
    return built
