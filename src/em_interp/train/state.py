"""Resume state: trainable weights, optimizer, scheduler, RNG and position, no pickles.

Each save writes a complete new folder ``<output_dir>/resume-states/step-N-XXXX/`` (three
safetensors files and ``state.json``, each fsynced) and then switches to it with ONE atomic
operation: ``os.replace`` of a fresh symlink over the ``<output_dir>/resume`` symlink. Older
state folders are removed after the switch. Whatever operation a kill interrupts, the
``resume`` link names either the previous complete state or the new complete one; leftover
half-written folders and temporary links are never read and are swept by the next save.
(A ``resume/`` real folder from older versions is still read, and replaced by a link on
the next save.)

Files: ``trainable.safetensors`` (the parameters being trained), ``optimizer.safetensors``
(per-parameter AdamW moments and step counts), ``rng.safetensors`` (torch CPU and CUDA
generator states) and ``state.json`` (step, optimizer param groups, scheduler state, loss
curve, token count, config and dataset fingerprints). The data order is not stored: it is
a pure function of (seed, epoch), see ``batching``.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from em_interp.errors import TrainError

RESUME_DIR = "resume"            # the switch: a symlink to the current state folder
STATES_DIR = "resume-states"     # complete (and at most a few abandoned) state folders
LEGACY_PARKED = "legacy"         # where a pre-symlink ``resume/`` folder is parked during its first switch
FILES = ("trainable.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json")


# Every filesystem operation of a save goes through one of these names, so a test can make
# the k-th of them fail and check that a resume works from the state left behind.
def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file(tensors, str(path))
    _fsync_file(path)


def _write_json(payload: dict, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(payload, indent=1))
        fh.flush()
        os.fsync(fh.fileno())


def _symlink(target: str, link: Path) -> None:
    os.symlink(target, link, target_is_directory=True)


def _replace(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def _rename(src: Path, dst: Path) -> None:
    os.rename(src, dst)


def _rmtree(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    else:
        shutil.rmtree(path)


FS_OPS = ("_mkdir", "_save_tensors", "_write_json", "_symlink", "_replace", "_rename", "_rmtree")


def state_dir(output_dir: Path) -> Path | None:
    """The folder of the current complete resume state, or None (recovers every
    intermediate state a killed save can leave)."""
    link = Path(output_dir) / RESUME_DIR
    if link.is_symlink():
        target = link.resolve()
        if not (target / "state.json").is_file():
            raise TrainError("resume link points to a missing or incomplete state folder; the run folder was "
                             "edited by hand", file=link)
        return target
    if link.is_dir():
        return link if (link / "state.json").is_file() else None  # a pre-symlink layout
    parked = Path(output_dir) / STATES_DIR / LEGACY_PARKED
    if (parked / "state.json").is_file():  # killed between parking a legacy folder and the switch
        return parked
    return None


def clear_state(output_dir: Path) -> None:
    """Remove the resume state once a run has finished (the link first: atomic)."""
    link = Path(output_dir) / RESUME_DIR
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        shutil.rmtree(link)
    shutil.rmtree(Path(output_dir) / STATES_DIR, ignore_errors=True)


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
    """Write the resume state for the current optimizer step and switch to it atomically."""
    output_dir = Path(output_dir)
    states = output_dir / STATES_DIR
    name = f"step-{int(info.get('step', 0))}-{secrets.token_hex(4)}"
    folder = states / name
    _mkdir(folder)
    _save_tensors({k: v.detach().to("cpu").contiguous() for k, v in trainable.items()},
                  folder / "trainable.safetensors")
    opt = optimizer.state_dict()
    opt_tensors, opt_scalars = _flatten_optimizer(opt)
    _save_tensors(opt_tensors, folder / "optimizer.safetensors")
    rng = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    _save_tensors(rng, folder / "rng.safetensors")
    sched = {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"}
    payload = dict(info, optimizer_param_groups=opt["param_groups"], optimizer_scalars=opt_scalars,
                   scheduler=sched)
    _write_json(payload, folder / "state.json")   # written last: the folder is complete

    link = output_dir / RESUME_DIR
    tmp_link = output_dir / f".{RESUME_DIR}.{secrets.token_hex(4)}.tmp"
    _symlink(os.path.join(STATES_DIR, name), tmp_link)
    if link.is_dir() and not link.is_symlink():  # a pre-symlink resume/ folder: park it, then switch
        _rename(link, states / LEGACY_PARKED)
    _replace(tmp_link, link)                      # THE switch
    for old in sorted(states.iterdir()):
        if old.name != name:
            _rmtree(old)
    for stale in output_dir.glob(f".{RESUME_DIR}.*.tmp"):
        _rmtree(stale)
    return folder


def has_state(output_dir: Path) -> bool:
    """Whether ``output_dir`` holds a resume state to continue from."""
    return state_dir(Path(output_dir)) is not None


def read_state_info(output_dir: Path) -> dict[str, Any]:
    """The saved ``state.json`` of the current resume state (``TrainError`` if unreadable)."""
    folder = state_dir(Path(output_dir))
    if folder is None:
        raise TrainError("no resume state", file=Path(output_dir) / RESUME_DIR)
    path = folder / "state.json"
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TrainError(f"unreadable resume state: {exc}", file=path) from None
    if not isinstance(info, dict) or not isinstance(info.get("step"), int):
        raise TrainError("resume state has no integer 'step'", file=path, field="step")
    return info


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except (OSError, SafetensorError, ValueError) as exc:
        raise TrainError(f"corrupt resume file: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                         file=path) from None


def load_state(output_dir: Path, *, trainable: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
               scheduler: Any) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG in place; return the saved info."""
    folder = state_dir(Path(output_dir))
    info = read_state_info(output_dir)
    weights = _load_tensors(folder / "trainable.safetensors")
    missing = sorted(set(trainable) ^ set(weights))
    if missing:
        raise TrainError(f"resume state does not match the model's trainable parameters (e.g. {missing[0]})",
                         file=folder)
    with torch.no_grad():
        for name, param in trainable.items():
            param.copy_(weights[name].to(param.device, param.dtype))
    opt_tensors = _load_tensors(folder / "optimizer.safetensors")
    try:
        optimizer.load_state_dict({"state": _unflatten_optimizer(opt_tensors, info["optimizer_scalars"]),
                                   "param_groups": info["optimizer_param_groups"]})
        sched = scheduler.state_dict()
        sched.update(info["scheduler"])
        scheduler.load_state_dict(sched)
    except (KeyError, TypeError, ValueError) as exc:
        raise TrainError(f"resume state does not fit this optimizer/scheduler: {exc}",
                         file=folder / "state.json") from None
    rng = _load_tensors(folder / "rng.safetensors")
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(k for k in rng if k.startswith("torch_cuda_"))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    return info
