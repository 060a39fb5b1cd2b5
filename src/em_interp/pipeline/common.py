"""What both stage lists (``stages`` for ``em-interp run``, ``transfer_stages`` for
``em-interp transfer``) share: the base model handle (``tiny:*`` saved once into the run),
model loading, one finetune per (dataset, seed), the judge, append-only JSONL rows and
the flat overall row of an eval summary.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

from em_interp.errors import ConfigError
from em_interp.pipeline.runner import RunContext

TINY_ARCHS = ("llama", "qwen2")


def parse_tiny(spec: str) -> tuple[str, int]:
    """``tiny:ARCH[:SEED]`` -> (arch, seed); a bad spec raises ``ConfigError`` on ``model``."""
    parts = spec.split(":")
    arch = parts[1] if len(parts) > 1 and parts[1] else "llama"
    if arch not in TINY_ARCHS or len(parts) > 3:
        raise ConfigError(f"model {spec!r}: expected tiny:ARCH[:SEED] with ARCH one of {', '.join(TINY_ARCHS)}",
                          field="model")
    try:
        seed = int(parts[2]) if len(parts) > 2 else 0
    except ValueError:
        raise ConfigError(f"model {spec!r}: expected tiny:ARCH[:SEED] with an integer seed", field="model") from None
    return arch, seed


def base_model_ref(ctx: RunContext) -> str:
    """What ``load_model`` gets for the base model; ``tiny:ARCH[:SEED]`` is saved once to RUN/base_model/."""
    spec = ctx.cfg.model
    if not spec.startswith("tiny:"):
        return spec
    if "base_ref" in ctx.cache:
        return ctx.cache["base_ref"]
    arch, seed = parse_tiny(spec)
    path = ctx.run_dir / "base_model"
    if not (path / "config.json").exists():
        from em_interp.models import save_tiny_model

        save_tiny_model(path, arch=arch, seed=seed)
    ctx.cache["base_ref"] = str(path)
    return str(path)


def model_identity(ctx: RunContext) -> dict[str, Any]:
    """The base model's identity for the manifest: registry sha256, or the folder / tiny spec."""
    from em_interp.models.registry import get_spec, is_registered
    from em_interp.models.shipped import resolve_model

    spec = ctx.cfg.model
    if spec.startswith("tiny:"):
        return {"name": spec, "tiny": True, "path": base_model_ref(ctx)}
    base, organism = resolve_model(spec)
    if organism is not None:
        s = get_spec(base)
        return {"name": spec, "original": s.original, "sha256": s.sha256, "registry": True,
                "organism": {"base": base, "adapter": organism.adapter, "sha256": organism.sha256,
                             "folder": str(organism.folder)}}
    if is_registered(spec):
        s = get_spec(spec)
        return {"name": spec, "original": s.original, "sha256": s.sha256, "registry": True}
    return {"name": spec, "path": spec}


def record_base_model(ctx: RunContext) -> None:
    """Write the base model's identity into the manifest."""
    ctx.manifest.data.setdefault("models", {})["base"] = model_identity(ctx)
    ctx.manifest.save()


def load(ctx: RunContext, target: dict[str, Any] | None = None):
    """Load the base model, or a finetuned one described by a target record (adapter / model_dir,
    relative to the run directory)."""
    from em_interp.models import load_model

    target = target or {}
    device = ctx.cfg.device
    if target.get("organism"):                  # a shipped organism arm: loaded by name (sha256-checked)
        return load_model(target["organism"], device=device)
    if target.get("model_dir"):
        return load_model(str(ctx.run_dir / target["model_dir"]), device=device)
    adapter = ctx.run_dir / target["adapter"] if target.get("adapter") else None
    return load_model(base_model_ref(ctx), adapter=adapter, device=device)


def arm_adapter(model: str, adapter: str, config_dir: Path | None = None, *,
                field: str = "data.arms") -> dict[str, Any]:
    """What an arm's ``adapter`` names, for ``load``: ``{"organism": "BASE+ADAPTER"}`` for a shipped
    organism (``ADAPTER`` alone means one on ``model``), else ``{"adapter": "/abs/folder"}`` for a
    peft adapter folder (relative to ``config_dir``). ``ConfigError`` on ``field`` when it names
    neither, or an organism of another base than ``model``."""
    from em_interp.errors import ModelError
    from em_interp.models.shipped import SEPARATOR, find_organism, list_organisms

    for cand in ([Path(adapter).expanduser()] + ([config_dir / adapter] if config_dir is not None else [])):
        if cand.is_dir():
            return {"adapter": str(cand.resolve())}
    name = adapter if SEPARATOR in adapter else f"{model}{SEPARATOR}{adapter}"
    try:
        org = find_organism(name)
    except ModelError as e:
        raise ConfigError(str(e), field=field) from None
    if org is None:
        shipped = ", ".join(o.name for o in list_organisms()) or "none"
        raise ConfigError(f"adapter {adapter!r} is neither a folder nor a shipped organism of {model!r} "
                          f"(shipped: {shipped})", field=field)
    if org.base != model:
        raise ConfigError(f"organism {org.name!r} is a finetune of {org.base!r}, but the experiment's model is "
                          f"{model!r}", field=field)
    return {"organism": org.name}


def config_dir(ctx: RunContext) -> Path | None:
    """The folder of the run's config file (relative paths in the config are relative to it)."""
    p = ctx.manifest.data.get("config_path")
    return Path(p).parent if p else None


def pretrained(ctx: RunContext, adapter: str, key: str, field: str) -> dict[str, Any]:
    """A train-stage record of an already trained model used as it is (an arm's or a source's
    ``adapter``, ``arm_adapter``): its adapter hash (a shipped organism's card sha256, else the
    folder's ``adapter_hash``) goes into the manifest under ``adapters[key]``."""
    from em_interp.models import adapter_hash
    from em_interp.models.shipped import find_organism

    rec = arm_adapter(base_model_ref(ctx), adapter, config_dir(ctx), field=field)
    sha = find_organism(rec["organism"]).card["sha256"] if "organism" in rec else adapter_hash(Path(rec["adapter"]))
    ctx.log(f"{key}: using {rec.get('organism') or rec.get('adapter')} as it is (not trained)")
    ctx.manifest.data.setdefault("adapters", {})[key] = sha
    ctx.manifest.save()
    return {"pretrained": True, "adapter": rec.get("adapter"), "organism": rec.get("organism"), "model_dir": None,
            "checkpoints": [], "final_loss": None}


def finetune(ctx: RunContext, data: Path, out: Path, seed: int, overrides: dict[str, Any],
             prefix: str) -> dict[str, Any]:
    """One ``train.train`` run of the base model on ``data`` (resumes a partial run in ``out``);
    returns a record with paths relative to the run directory and the adapter hash in the manifest."""
    from em_interp.config import from_dict
    from em_interp.train import TrainConfig, train

    cfg = from_dict(TrainConfig, {"progress": False, **overrides, "model": base_model_ref(ctx), "data": str(data),
                                  "output_dir": str(out), "seed": seed}, prefix=prefix)
    result = train(cfg, resume=True)

    def rel(p: Path | None) -> str | None:
        return str(Path(p).resolve().relative_to(ctx.run_dir.resolve())) if p else None

    rec = {"adapter": rel(result.adapter_dir),
           "model_dir": rel(result.model_dir) if result.adapter_dir is None else None,
           "checkpoints": [rel(c) for c in result.checkpoints],
           "final_loss": final_loss(result.metadata)}
    if result.adapter_dir is not None:
        from em_interp.models import adapter_hash

        key = str(Path(out).resolve().relative_to((ctx.run_dir / "train").resolve()))
        ctx.manifest.data.setdefault("adapters", {})[key] = adapter_hash(result.adapter_dir)
        ctx.manifest.save()
    return rec


def final_loss(meta: dict[str, Any]) -> float | None:
    """The last training loss of a ``train_meta.json`` dict (None without a loss curve)."""
    curve = meta.get("loss_curve") or []
    if not curve:
        return None
    last = curve[-1]
    return float(last["loss"]) if isinstance(last, dict) and "loss" in last else (
        float(last) if isinstance(last, (int, float)) else None)


def load_judge(kind: str, options: dict[str, Any], ctx: RunContext | None = None):
    """``eval.load_judge`` once per stage session (cached in ``ctx.cache``)."""
    from em_interp.eval import load_judge as _load

    key = ("judge", kind, json.dumps(options, sort_keys=True, default=str))
    if ctx is not None and key in ctx.cache:
        return ctx.cache[key]
    judge = _load(kind, **options)
    if ctx is not None:
        ctx.cache[key] = judge
    return judge


# ----------------------------------------------------------------------------- append-only JSONL


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Rows of an append-only JSONL file this package wrote (a torn last line, from a crash
    mid-write, is ignored; a missing file is empty)."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Append one JSON row (flushed at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row, default=_json_default, ensure_ascii=False) + "\n")
        fh.flush()


def write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write a whole JSONL file atomically (temp file + rename): it exists only when complete."""
    import os

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r, default=_json_default, ensure_ascii=False) + "\n" for r in rows),
                   encoding="utf-8")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def clean_json(obj: Any) -> Any:
    """NaN/inf -> None, numpy scalars -> Python, dict keys -> str (for strict JSON files)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    import numpy as np

    if isinstance(obj, np.generic):
        return clean_json(obj.item())
    return obj


def num(x: Any) -> float | None:
    """A finite float or None."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def overall(summary: dict[str, Any]) -> dict[str, Any]:
    """The overall numbers of an ``eval.summarize`` dict as a flat row."""
    o = summary.get("overall", summary)
    ci = o.get("misaligned_ci") or [o.get("ci_low"), o.get("ci_high")]
    row = {
        "misaligned_share": num(o.get("misaligned_share")),
        "ci_low": num(ci[0]) if ci else None,
        "ci_high": num(ci[1]) if ci else None,
        "coherent_share": num(o.get("coherent_share")),
        "mean_aligned": num(o.get("mean_aligned")),
        "n": o.get("n"),
    }
    cal = summary.get("calibrated") if isinstance(summary.get("calibrated"), dict) else None
    if cal and cal.get("calibrated"):  # the judge's share corrected for its own errors (eval.metrics)
        row.update(calibrated_share=num(cal.get("share")), calibrated_low=num(cal.get("low")),
                   calibrated_high=num(cal.get("high")))
    return row
