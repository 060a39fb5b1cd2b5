"""Frobenius norms of a LoRA adapter's weight deltas per adapted module, as report rows.

Rows are ``{"layer", "module", "rank", "norm"}`` with ``module`` relative to the decoder
layer (``self_attn.q_proj``, ``mlp.down_proj``). ``adapter_delta_norms(folder)`` reads an
adapter folder through ``em_interp.interp.lora_analysis.adapter_deltas``;
``lora_delta_norms(model)`` reads an in-memory peft model (``get_delta_weight``, scaling
included) for finetuned models that were never saved.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


def lora_delta_norms(model: Any) -> list[dict]:
    """One row per LoRA module of a peft-wrapped model (sorted by layer, module)."""
    from peft.tuners.lora import LoraLayer

    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        m = _LAYER_RE.search(name)
        for adapter_name in module.lora_A.keys():
            with torch.no_grad():
                delta = module.get_delta_weight(adapter_name).float()
            rows.append({"layer": int(m.group(1)) if m else None, "module": m.group(2) if m else name,
                         "rank": int(module.r[adapter_name]),
                         "norm": float(torch.linalg.matrix_norm(delta).item())})
    rows.sort(key=lambda r: (r["layer"] if r["layer"] is not None else -1, r["module"]))
    return rows


def adapter_delta_norms(adapter: str | Path) -> list[dict]:
    """Rows for a saved peft adapter folder (no model needed)."""
    from em_interp.interp.lora_analysis import adapter_deltas

    return [{"layer": m.layer, "module": m.module, "rank": m.rank, "norm": m.delta_norm}
            for m in adapter_deltas(adapter)]


def is_peft(model: Any) -> bool:
    """Whether ``model`` carries LoRA layers."""
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())
