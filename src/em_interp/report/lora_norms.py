"""Frobenius norms of a LoRA adapter's weight deltas, per adapted module (ΔW from peft itself).

``lora_delta_norms(model)`` walks a peft-wrapped model's LoRA layers and records
``||ΔW||_F`` (``get_delta_weight``, scaling included), the layer index and the module
kind (``q_proj``, ``down_proj`` ...). ``adapter_delta_norms(base_lm, adapter_dir)``
attaches the adapter to a copy of the base model first.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import torch

from em_interp.report.errors import ReportError

_LAYER_RE = re.compile(r"\.layers\.(\d+)\.")


def lora_delta_norms(model) -> list[dict]:
    """One row per LoRA module: ``{"module", "layer", "kind", "rank", "norm"}`` (sorted by layer, name)."""
    from peft.tuners.lora import LoraLayer

    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for adapter_name in module.lora_A.keys() if hasattr(module.lora_A, "keys") else []:
            with torch.no_grad():
                delta = module.get_delta_weight(adapter_name).float()
            m = _LAYER_RE.search(name + ".")
            rows.append({
                "module": name.split("base_model.model.", 1)[-1],
                "layer": int(m.group(1)) if m else None,
                "kind": name.rsplit(".", 1)[-1],
                "adapter": adapter_name,
                "rank": int(module.r[adapter_name]),
                "norm": float(torch.linalg.matrix_norm(delta).item()),
            })
    rows.sort(key=lambda r: (r["layer"] if r["layer"] is not None else -1, r["module"]))
    return rows


def adapter_delta_norms(base_lm, adapter: str | Path) -> list[dict]:
    """Delta norms of the adapter folder ``adapter`` attached to a copy of ``base_lm.model``."""
    from em_interp.models import attach_adapter

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise ReportError("not a peft adapter folder (no adapter_config.json)", file=adapter)
    model = attach_adapter(copy.deepcopy(base_lm.model), adapter, merge=False)
    return lora_delta_norms(model)


def is_peft(model) -> bool:
    """Whether ``model`` carries LoRA layers."""
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())
