"""Three ways to run a batch and read site activations: ``hf``, ``transformer_lens``, ``nnsight``.

All backends take the same padded batch (explicit attention mask and position ids) and
call ``fn(site, tensor[B, T, d])`` once per requested site, in execution order, with the
same numbers (to float tolerance). ``hf`` is the fast default: plain torch hooks on the
needed modules only, the forward stops after the last needed layer, no logits are
computed, nothing is cached beyond what ``fn`` keeps. ``transformer_lens`` boots a
``TransformerBridge`` on a deep copy of the model (the bridge mutates the module it is
given, and edits the tokenizer's init kwargs: both are copied; peft adapters are merged
into the copy first). ``nnsight`` wraps the plain HF
module (adapters stay active).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

from em_interp.errors import InterpError
from em_interp.interp.inputs import Batch
from em_interp.interp.sites import Site, body_of, decoder_layers, first_tensor, site_module, unwrap

BACKENDS = ("hf", "transformer_lens", "nnsight")
SiteFn = Callable[[Site, Any], None]


class _StopForward(Exception):
    """Raised by the last needed hook to skip the rest of the forward pass."""


class Backend:
    """Runs batches on one model. Build once with ``make_backend`` and reuse across calls."""

    name = "base"

    def __init__(self, model: Any, tokenizer: Any, lm_name: str | None = None) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.lm_name = lm_name

    def run(self, batch: Batch, sites: Sequence[Site], fn: SiteFn) -> None:  # pragma: no cover
        raise NotImplementedError


class HFBackend(Backend):
    """Torch forward hooks on the plain HF module (the default)."""

    name = "hf"

    def run(self, batch: Batch, sites: Sequence[Site], fn: SiteFn) -> None:
        import torch

        last = sites[-1]  # sites come in execution order (parse_sites)
        handles = []

        def make_hook(site: Site, is_last: bool):
            if site.kind == "resid_pre":
                def pre_hook(module, args, kwargs):
                    fn(site, args[0] if args else kwargs["hidden_states"])
                    if is_last:
                        raise _StopForward
                return pre_hook

            def hook(module, args, output):
                fn(site, first_tensor(output))
                if is_last:
                    raise _StopForward
            return hook

        # one hook per site; the last one in execution order stops the forward
        try:
            for site in sites:
                mod = site_module(self.model, site)
                h = make_hook(site, site == last)
                if site.kind == "resid_pre":
                    handles.append(mod.register_forward_pre_hook(h, with_kwargs=True))
                else:
                    handles.append(mod.register_forward_hook(h))
            body = body_of(self.model)  # skip the LM head
            with torch.inference_mode():
                try:
                    body(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                         position_ids=batch.position_ids, use_cache=False)
                except _StopForward:
                    pass
        finally:
            for h in handles:
                h.remove()


class TransformerLensBackend(Backend):
    """TransformerLens 3 ``TransformerBridge`` (hook names ``blocks.L.hook_resid_post``...)."""

    name = "transformer_lens"

    def __init__(self, model: Any, tokenizer: Any, lm_name: str | None = None) -> None:
        super().__init__(model, tokenizer, lm_name)
        from transformer_lens.model_bridge import TransformerBridge

        hf = copy.deepcopy(unwrap(model) if not _is_peft(model) else model)
        if _is_peft(hf):
            hf = hf.merge_and_unload()
        self.bridge = TransformerBridge.boot_transformers(
            lm_name or getattr(hf.config, "_name_or_path", "") or "model", hf_model=hf, tokenizer=copy.deepcopy(tokenizer),
            device=str(next(hf.parameters()).device))

    def run(self, batch: Batch, sites: Sequence[Site], fn: SiteFn) -> None:
        import torch

        by_name = {s.tl_name: s for s in sites}
        missing = [n for n in by_name if n not in self.bridge.hook_dict]
        if missing:
            raise InterpError(f"TransformerLens bridge has no hook {missing[0]}")
        got: dict[str, Any] = {}

        def make_hook(name: str):
            def hook(tensor, hook):  # keyed by our name: TL aliases hook_resid_pre to hook_in
                got[name] = first_tensor(tensor)
                return tensor
            return hook

        with torch.inference_mode():
            self.bridge.run_with_hooks(
                batch.input_ids, fwd_hooks=[(n, make_hook(n)) for n in by_name], attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, return_type=None,
                stop_at_layer=max(s.layer for s in sites) + 1)
        for name, site in by_name.items():
            fn(site, got[name])


class NNsightBackend(Backend):
    """nnsight ``LanguageModel`` over the plain HF module; ``.output`` of a layer is a tensor."""

    name = "nnsight"

    def __init__(self, model: Any, tokenizer: Any, lm_name: str | None = None) -> None:
        super().__init__(model, tokenizer, lm_name)
        import warnings

        from nnsight import LanguageModel

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.nn = LanguageModel(unwrap(model), tokenizer=tokenizer)

    def _envoy(self, site: Site):
        layers = self.nn.model.layers
        layer = layers[site.layer]
        if site.kind == "resid_pre":
            return layer.input
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


def make_backend(lm: Any, backend: str | Backend = "hf") -> Backend:
    """A backend for ``lm`` (a ``LoadedModel``); an existing ``Backend`` passes through."""
    if isinstance(backend, Backend):
        return backend
    classes = {"hf": HFBackend, "transformer_lens": TransformerLensBackend, "nnsight": NNsightBackend}
    if backend not in classes:
        raise InterpError(f"unknown backend '{backend}'; valid backends: {', '.join(BACKENDS)}", field="backend")
    decoder_layers(lm.model)  # fail early on unsupported architectures
    return classes[backend](lm.model, lm.tokenizer, getattr(lm, "path", None) or getattr(lm, "name", None))
