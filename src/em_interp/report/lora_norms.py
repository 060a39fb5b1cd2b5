"""Frobenius norms of a LoRA adapter's weight deltas per adapted module, as report rows.

Rows are ``{"layer", "module", "rank", "norm"}`` with ``module`` relative to the decoder
layer (``self_attn.q_proj``, ``mlp.down_proj``). ``adapter_delta_norms(folder)`` reads an
adapter folder through ``em_interp.interp.lora_analysis.adapter_deltas``;
``lora_delta_norms(model)`` (computed in ``em_interp.interp.lora_analysis``) reads an
in-memory peft model (``get_delta_weight``, scaling included) for models never saved.
"""

from __future__ import annotations

from pathlib import Path

from em_interp.interp.lora_analysis import is_peft, lora_delta_norms

__all__ = ["adapter_delta_norms", "is_peft", "lora_delta_norms"]


def adapter_delta_norms(adapter: str | Path) -> list[dict]:
    """Rows for a saved peft adapter folder (no model needed)."""
    from em_interp.interp.lora_analysis import adapter_deltas

    return [{"layer": m.layer, "module": m.module, "rank": m.rank, "norm": m.delta_norm}
            for m in adapter_deltas(adapter)]
