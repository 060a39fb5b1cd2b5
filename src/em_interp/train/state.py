"""Resume state: trainable weights, optimizer, scheduler, RNG and position, no pickles.

Written to ``<output_dir>/resume/`` at every checkpoint, atomically (a temporary
folder renamed into place), as three safetensors files and one JSON:
``trainable.safetensors`` (the parameters being trained), ``optimizer.safetensors``
(per-parameter AdamW moments and step counts), ``rng.safetensors`` (torch CPU and
CUDA generator states) and ``state.json`` (step, optimizer param groups, scheduler
state, loss curve, token count, config and dataset fingerprints). The data order is
not stored: it is a pure function of (seed, epoch), see ``batching``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from em_interp.errors import TrainError

RESUME_DIR = "resume"


def _flatten_optimizer(opt_state: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for idx, entries in opt_state["state"].items():
        for key, value in entries.items():
            name = f"{idx}.{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value.detach().to("cpu").contiguous()
            else:
                scalars[name] = value
    return tensors, scalars


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], scalars: dict[str, Any]) -> dict[int, dict]:
    state: dict[int, dict] = {}
    for name, value in list(tensors.items()) + list(scalars.items()):
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return state


def save_state(output_dir: Path, *, trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               scheduler: Any, info: dict[str, Any]) -> Path:
    """Write the resume state for the current optimizer step (replaces the previous one)."""
    final = output_dir / RESUME_DIR
    tmp = output_dir / (RESUME_DIR + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    save_file({k: v.detach().to("cpu").contiguous() for k, v in trainable.items()},
              str(tmp / "trainable.safetensors"))
    opt = optimizer.state_dict()
    opt_tensors, opt_scalars = _flatten_optimizer(opt)
    save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    save_file(rng, str(tmp / "rng.safetensors"))
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    payload = dict(info, optimizer_param_groups=opt["param_groups"], optimizer_scalars=opt_scalars,
                   scheduler=sched)
    (tmp / "state.json").write_text(json.dumps(payload, indent=1))
    old = output_dir / (RESUME_DIR + ".old")
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    if old.exists():
        shutil.rmtree(old)
    return final


def has_state(output_dir: Path) -> bool:
    return (output_dir / RESUME_DIR / "state.json").exists()


def read_state_info(output_dir: Path) -> dict[str, Any]:
    path = output_dir / RESUME_DIR / "state.json"
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TrainError(f"unreadable resume state: {exc}", file=path) from None


def load_state(output_dir: Path, *, trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               scheduler: Any) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG in place; return the saved info."""
    folder = output_dir / RESUME_DIR
    info = read_state_info(output_dir)
    weights = load_file(str(folder / "trainable.safetensors"))
    missing = sorted(set(trainable) ^ set(weights))
    if missing:
        raise TrainError(f"resume state does not match the model's trainable parameters (e.g. {missing[0]})",
                         file=folder)
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(weights[name].to(param.device, param.dtype))
    opt_tensors = load_file(str(folder / "optimizer.safetensors"))
    optimizer.load_state_dict({"state": _unflatten_optimizer(opt_tensors, info["optimizer_scalars"]),
                               "param_groups": info["optimizer_param_groups"]})
    sched = scheduler.state_dict()
    sched.update(info["scheduler"])
    scheduler.load_state_dict(sched)
    rng = load_file(str(folder / "rng.safetensors"))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("torch_cuda_"))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return info
