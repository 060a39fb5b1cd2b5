"""What researchers hold -> one ``ModelHandle`` the interp functions work on.

Accepted everywhere a model is taken (``capture``, ``hooks``, ``steer``, ``ablate``,
``run_with_cache``, ``patch``):

- our ``LoadedModel`` (``em_interp.models.load_model`` / ``tiny_model``);
- a ``(model, tokenizer)`` pair, the model a transformers ``*ForCausalLM`` or a peft model;
- an nnsight ``LanguageModel`` (its wrapped HF module is hooked, so traces and our hooks compose);
- a TransformerLens ``HookedTransformer`` or ``TransformerBridge`` (hooked at its own hook
  points ``blocks.L.hook_*``; its tokenizer and BOS convention are used);
- a bare HF / peft module (enough for ``hooks`` / ``steer`` / ``ablate``; reading text needs a tokenizer).

``ModelHandle.kind`` is ``"hf"`` (torch hooks on the decoder modules) or ``"tl"``
(forward hooks on TransformerLens ``HookPoint`` modules).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from em_interp.errors import InterpError
from em_interp.interp.sites import d_model_of, decoder_layers, n_layers_of


@dataclass(frozen=True)
class ModelHandle:
    """A model normalised for interp: ``kind`` ``"hf"`` | ``"tl"``, the module to hook, its tokenizer."""

    kind: str
    module: Any
    tokenizer: Any
    name: str
    source: Any

    @property
    def n_layers(self) -> int:
        """Number of decoder layers."""
        return int(self.module.cfg.n_layers) if self.kind == "tl" else n_layers_of(self.module)

    @property
    def d_model(self) -> int:
        """Residual-stream width."""
        return int(self.module.cfg.d_model) if self.kind == "tl" else d_model_of(self.module)

    @property
    def device(self) -> Any:
        """Device of the model's first parameter."""
        return next(self.module.parameters()).device

    def require_tokenizer(self) -> Any:
        """The tokenizer, or a clear error saying how to pass one."""
        if self.tokenizer is None:
            raise InterpError(f"{type(self.module).__name__} came without a tokenizer; pass (model, tokenizer)",
                              field="lm")
        return self.tokenizer


def is_transformer_lens(obj: Any) -> bool:
    """True for a TransformerLens ``HookedTransformer`` / ``TransformerBridge`` (anything with TL hook points)."""
    return hasattr(obj, "hook_dict") and hasattr(obj, "cfg") and type(obj).__module__.startswith("transformer_lens")


def _is_nnsight(obj: Any) -> bool:
    return type(obj).__module__.startswith("nnsight") and "_module" in vars(obj)


def _name(module: Any) -> str:
    cfg = getattr(module, "config", None) or getattr(module, "cfg", None)
    return str(getattr(cfg, "_name_or_path", "") or getattr(cfg, "model_name", "") or type(module).__name__)


def as_model(lm: Any, tokenizer: Any = None) -> ModelHandle:
    """Normalise ``lm`` (see the module docstring) into a ``ModelHandle``; unknown types -> ``InterpError``."""
    if isinstance(lm, ModelHandle):
        return lm
    if isinstance(lm, (tuple, list)) and len(lm) == 2:
        return as_model(lm[0], lm[1])
    from em_interp.models.loading import LoadedModel

    if isinstance(lm, LoadedModel):
        return ModelHandle("hf", lm.model, tokenizer or lm.tokenizer, str(lm.name), lm)
    if is_transformer_lens(lm):
        return ModelHandle("tl", lm, tokenizer or getattr(lm, "tokenizer", None), _name(lm), lm)
    if _is_nnsight(lm):
        module = vars(lm)["_module"]
        return ModelHandle("hf", module, tokenizer or getattr(lm, "tokenizer", None), _name(module), lm)
    if hasattr(lm, "parameters"):
        try:
            decoder_layers(lm)
        except InterpError:
            raise InterpError(f"cannot find the decoder layers of {type(lm).__name__}; pass a LoadedModel, an HF/peft "
                              "*ForCausalLM (with its tokenizer), an nnsight LanguageModel or a TransformerLens "
                              "HookedTransformer/TransformerBridge", field="lm") from None
        return ModelHandle("hf", lm, tokenizer, _name(lm), lm)
    raise InterpError(f"cannot use a {type(lm).__name__} as a model; pass a LoadedModel, (model, tokenizer), an "
                      "nnsight LanguageModel or a TransformerLens HookedTransformer/TransformerBridge", field="lm")
