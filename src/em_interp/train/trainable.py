"""Make a model trainable: a peft LoRA (any rank, incl. rank-1) or full finetuning.

Target modules are checked against the model before anything is built: a name that
matches no linear module raises ``TrainError`` listing the valid names, and ``layers``
outside ``0..n_layers-1`` are rejected, so a typo never reaches peft or torch.
"""

from __future__ import annotations

import re
from typing import Any

import torch

from em_interp.errors import TrainError
from em_interp.train.config import TrainConfig

_LAYER_RE = re.compile(r"^(?:.*\.)?layers\.(\d+)\.(.+)$")


def linear_module_names(model: Any) -> list[str]:
    """Full names of the ``nn.Linear`` modules inside the transformer blocks."""
    return [name for name, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear) and _LAYER_RE.match(name)]


def valid_target_names(model: Any) -> list[str]:
    """Per-block suffixes usable as ``lora.target_modules`` (``self_attn.q_proj``, ...)."""
    seen: dict[str, None] = {}
    for name in linear_module_names(model):
        seen.setdefault(_LAYER_RE.match(name).group(2), None)
    return list(seen)


def check_targets(model: Any, target_modules: list[str], layers: list[int] | None, n_layers: int) -> None:
    """Raise ``TrainError`` if a target matches no block linear module or a layer is out of range."""
    names = linear_module_names(model)
    for target in target_modules:
        if not any(n == target or n.endswith("." + target) for n in names):
            raise TrainError(f"target module '{target}' does not exist in the model; valid names: "
                             f"{', '.join(valid_target_names(model))}", field="lora.target_modules")
    for layer in layers or []:
        if not 0 <= layer < n_layers:
            raise TrainError(f"layer {layer} is out of range; the model has layers 0..{n_layers - 1}",
                             field="lora.layers")


def lora_config(cfg: TrainConfig):
    """The peft ``LoraConfig`` for ``cfg.lora``."""
    from peft import LoraConfig

    s = cfg.lora
    return LoraConfig(
        r=s.r, lora_alpha=s.alpha, use_rslora=s.use_rslora, lora_dropout=s.dropout,
        target_modules=list(s.target_modules), bias=s.bias, task_type="CAUSAL_LM",
        layers_to_transform=list(s.layers) if s.layers is not None else None,
        layers_pattern="layers" if s.layers is not None else None,
    )


def make_trainable(model: Any, cfg: TrainConfig, n_layers: int) -> Any:
    """Wrap ``model`` for ``cfg.method``; returns the module to train (peft model for LoRA).

    Call under a seeded RNG: LoRA's A matrices are randomly initialised."""
    if cfg.method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        return model
    from peft import get_peft_model

    check_targets(model, list(cfg.lora.target_modules), cfg.lora.layers, n_layers)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    return get_peft_model(model, lora_config(cfg))


def trainable_parameters(model: Any) -> dict[str, torch.Tensor]:
    """Name -> parameter for everything that receives gradients (stable order)."""
    return {n: p for n, p in model.named_parameters() if p.requires_grad}
