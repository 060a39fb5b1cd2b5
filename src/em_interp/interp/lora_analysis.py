"""LoRA-adapter analysis straight from peft adapter folders (no model needed).

``adapter_deltas(folder)``: per layer and module, the Frobenius norm of the weight delta
``scaling * B @ A`` (computed through the r x r Gram matrices, never materialising the
full delta), the rank, and for rank-1 adapters the B vector (the output-space direction;
for ``o_proj`` / ``down_proj`` it lives in the residual stream). ``b_vector_cosines``
compares rank-1 B vectors with a ``Direction``. ``checkpoint_trajectory`` walks
``checkpoints/step-N/`` folders: norms per step and the cosine between successive B
vectors (a sharp drop marks the rotation seen at a phase transition).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from em_interp.errors import InterpError

_KEY = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+?)\.lora_([AB])(?:\.[^.]+)?\.weight$")


@dataclass
class LoraModule:
    """One adapted module: ``layer``, ``module`` (e.g. ``mlp.down_proj``), rank, scaling,
    ``delta_norm`` (Frobenius norm of scaling * B @ A) and ``b`` (B[:, 0] for rank 1, else None)."""

    layer: int
    module: str
    rank: int
    scaling: float
    delta_norm: float
    b: Any = None
    a: Any = None

    @property
    def name(self) -> str:
        return f"layers.{self.layer}.{self.module}"


def _read_adapter(folder: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    cfg_path = folder / "adapter_config.json"
    if not cfg_path.exists():
        raise InterpError("not a peft adapter folder (no adapter_config.json)", file=folder)
    weights = folder / "adapter_model.safetensors"
    if not weights.exists():
        raise InterpError("adapter weights not found (expected adapter_model.safetensors)", file=folder)
    try:
        cfg = json.loads(cfg_path.read_text())
    except json.JSONDecodeError as exc:
        raise InterpError(f"invalid JSON: {exc.msg}", file=cfg_path, line=exc.lineno) from None
    return cfg, load_file(str(weights))


def _scaling(cfg: dict, name: str, rank: int) -> float:
    alpha = cfg.get("lora_alpha", rank)
    for pattern, a in (cfg.get("alpha_pattern") or {}).items():
        if re.search(pattern, name):
            alpha = a
    denom = rank ** 0.5 if cfg.get("use_rslora") else rank
    return float(alpha) / float(denom)


def adapter_deltas(folder: str | Path) -> list[LoraModule]:
    """Per-module weight-delta norms (and rank-1 B/A vectors) of a peft LoRA adapter folder."""
    import torch

    folder = Path(folder)
    cfg, tensors = _read_adapter(folder)
    pairs: dict[tuple[int, str], dict[str, Any]] = {}
    for key, t in tensors.items():
        m = _KEY.search(key)
        if m:
            pairs.setdefault((int(m.group(1)), m.group(2)), {})[m.group(3)] = t.float()
    if not pairs:
        raise InterpError("no LoRA A/B weights with a layer index found", file=folder / "adapter_model.safetensors")
    out = []
    for (layer, module), ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"}:
            raise InterpError(f"layer {layer} {module}: lora_A or lora_B missing", file=folder)
        A, B = ab["A"], ab["B"]  # A: [r, in], B: [out, r]
        rank = A.shape[0]
        s = _scaling(cfg, f"layers.{layer}.{module}", rank)
        gram = (B.T @ B) @ (A @ A.T)  # ||BA||_F^2 = tr(B^T B A A^T)
        norm = abs(s) * float(torch.trace(gram).clamp_min(0).sqrt())
        out.append(LoraModule(layer, module, rank, s, norm, B[:, 0].clone() if rank == 1 else None,
                              A[0].clone() if rank == 1 else None))
    return out


def b_vector_cosines(modules: list[LoraModule], direction: Any) -> list[dict]:
    """Cosine of each rank-1 B vector whose size is the direction's d_model with the direction
    at that layer (modules writing to the residual stream: ``o_proj``, ``down_proj``)."""
    import torch.nn.functional as F

    rows = []
    for m in modules:
        if m.b is None or m.b.shape[0] != direction.d_model:
            continue
        try:
            v = direction.vector(m.layer).float()
        except InterpError:
            continue
        rows.append({"layer": m.layer, "module": m.module, "cosine": float(F.cosine_similarity(m.b, v, dim=0))})
    return rows


def _step_of(path: Path) -> int:
    m = re.search(r"(\d+)$", path.name)
    if not m:
        raise InterpError("checkpoint folder name must end with its step number (checkpoints/step-N)", file=path)
    return int(m.group(1))


def checkpoint_trajectory(checkpoints: str | Path | list[str | Path], direction: Any = None) -> list[dict]:
    """Rows per (step, module): ``delta_norm``, and for rank-1 adapters ``cos_prev`` (cosine
    of B with the previous checkpoint's B), ``cos_final`` (with the last checkpoint's B)
    and, given a ``direction``, ``cos_direction``. ``checkpoints`` is a folder of
    ``step-N`` subfolders or a list of adapter folders."""
    import torch.nn.functional as F

    if isinstance(checkpoints, (str, Path)):
        root = Path(checkpoints)
        folders = [p for p in root.iterdir() if p.is_dir() and (p / "adapter_config.json").exists()] \
            if root.is_dir() else []
        if not folders:
            raise InterpError("no adapter checkpoint folders (step-N/adapter_config.json) found", file=root)
    else:
        folders = [Path(p) for p in checkpoints]
    folders = sorted(folders, key=_step_of)
    per_step = [(_step_of(f), {m.name: m for m in adapter_deltas(f)}) for f in folders]
    final = per_step[-1][1]
    rows, prev = [], None
    for step, mods in per_step:
        for name, m in mods.items():
            row: dict[str, Any] = {"step": step, "layer": m.layer, "module": m.module, "rank": m.rank,
                                   "delta_norm": m.delta_norm}
            if m.b is not None:
                if prev is not None and name in prev and prev[name].b is not None:
                    row["cos_prev"] = float(F.cosine_similarity(m.b, prev[name].b, dim=0))
                if name in final and final[name].b is not None:
                    row["cos_final"] = float(F.cosine_similarity(m.b, final[name].b, dim=0))
                if direction is not None and m.b.shape[0] == direction.d_model:
                    try:
                        row["cos_direction"] = float(F.cosine_similarity(m.b, direction.vector(m.layer).float(), dim=0))
                    except InterpError:
                        pass
            rows.append(row)
        prev = mods
    return rows


_PEFT_LAYER_RE = re.compile(r"(?:^|\.)layers\.(\d+)\.(.+)$")


def lora_delta_norms(model: Any) -> list[dict]:
    """One row ``{layer, module, rank, norm}`` per LoRA module of an in-memory peft model
    (``norm`` = Frobenius norm of ``get_delta_weight``, scaling included; sorted by layer, module)."""
    import torch
    from peft.tuners.lora import LoraLayer

    rows = []
    for name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        m = _PEFT_LAYER_RE.search(name)
        for adapter_name in module.lora_A.keys():
            with torch.no_grad():
                delta = module.get_delta_weight(adapter_name).float()
            rows.append({"layer": int(m.group(1)) if m else None, "module": m.group(2) if m else name,
                         "rank": int(module.r[adapter_name]),
                         "norm": float(torch.linalg.matrix_norm(delta).item())})
    rows.sort(key=lambda r: (r["layer"] if r["layer"] is not None else -1, r["module"]))
    return rows


def is_peft(model: Any) -> bool:
    """Whether ``model`` carries LoRA layers."""
    from peft.tuners.lora import LoraLayer

    return any(isinstance(m, LoraLayer) for m in model.modules())
