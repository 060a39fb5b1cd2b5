"""Shipped organisms: a registry base model plus a small LoRA adapter that ships with the code.

A shipped organism is named ``BASE+ADAPTER`` (``qwen2.5-coder-0.5b-instruct+bad-medical``):
``BASE`` is a registry model (pulled offline as usual), ``ADAPTER`` a folder shipped in
``em_interp/models/organisms/BASE+ADAPTER/`` holding

- ``adapter_model.safetensors``: the peft LoRA tensors in bf16 (at most 40 MB),
- ``adapter_config.json`` and ``em_interp_adapter.json`` (the base it was trained on, checked
  when it attaches, see ``models.adapters``),
- ``card.json`` + ``CARD.md``: base, data set (name, sha256), recipe (LoRA r/alpha/rslora/targets,
  lr, steps, rows, seed), the safetensors file's sha256 and the measured EM share with its CI
  (or, loudly, "not measured").

``resolve_model(name)`` is the one place a model name is split: every command that takes a model
name (``load_model`` and so ``eval``, ``capture``, ``steer``, ``chat``, ``run``...) goes through it.
Loading verifies the weights file against the card's sha256 first. ``package_adapter`` (the
``em-interp models package-adapter`` command) writes such a folder from a training run, an
``adapter/`` folder or a ``checkpoints/step-N`` folder. Extra organism folders are searched first
in ``$EM_INTERP_ORGANISMS`` (``os.pathsep``-separated), e.g. for tests or unreleased organisms.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from em_interp.errors import ModelError
from em_interp.hashing import sha256_file
from em_interp.jsonl import read_json_object
from em_interp.models.adapters import ADAPTER_CONFIG, ADAPTER_META, ADAPTER_WEIGHTS, adapter_base, check_adapter_folder

ORGANISMS_ENV = "EM_INTERP_ORGANISMS"
PACKAGE_DIR = Path(__file__).resolve().parent / "organisms"
CARD = "card.json"
CARD_MD = "CARD.md"
CARD_FORMAT = "em-interp-organism/1"
MAX_BYTES = 40_000_000                    # shipped adapters: at most 40 MB (10^6 bytes) on disk
SEPARATOR = "+"
NOT_MEASURED = "not measured"
REQUIRED_FIELDS = ("format", "name", "base", "adapter", "sha256", "size_bytes", "dtype", "data", "recipe", "measured")
_ADAPTER_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
TRAIN_META = "train_meta.json"          # written by ``em-interp train`` beside adapter/ and checkpoints/


# --------------------------------------------------------------------------------------------
# finding and resolving


def organism_dirs() -> list[Path]:
    """Folders searched for ``BASE+ADAPTER/`` organism folders: ``$EM_INTERP_ORGANISMS`` first, then the package's."""
    extra = [Path(p).expanduser() for p in os.environ.get(ORGANISMS_ENV, "").split(os.pathsep) if p.strip()]
    return extra + [PACKAGE_DIR]


def split_name(name: str) -> tuple[str, str] | None:
    """``("BASE", "ADAPTER")`` for a ``BASE+ADAPTER`` name, else None."""
    base, sep, adapter = str(name).rpartition(SEPARATOR)
    return (base, adapter) if sep and base and adapter else None


@dataclass(frozen=True)
class Organism:
    """One shipped organism folder and its card."""

    name: str          # BASE+ADAPTER
    base: str          # registry name of the base model
    adapter: str       # the adapter's short name
    folder: Path
    card: dict

    @property
    def weights(self) -> Path:
        return self.folder / ADAPTER_WEIGHTS

    @property
    def sha256(self) -> str:
        return str(self.card.get("sha256", ""))

    @property
    def size_bytes(self) -> int:
        return self.weights.stat().st_size if self.weights.is_file() else int(self.card.get("size_bytes") or 0)

    @property
    def measured(self) -> dict:
        m = self.card.get("measured")
        return m if isinstance(m, dict) else {"status": NOT_MEASURED}

    def measured_line(self) -> str:
        return measured_line(self.measured)

    def verify(self) -> None:
        """``ModelError`` naming the weights file unless its sha256 is the card's."""
        verify_weights(self.folder, self.card)


def _read_card(folder: Path) -> dict:
    return read_json_object(folder / CARD, ModelError, "corrupt organism card")


def read_organism(folder: str | Path) -> Organism:
    """The organism in ``folder`` (its name is the folder's, and must agree with the card)."""
    folder = Path(folder)
    card = _read_card(folder)
    parts = split_name(folder.name)
    if parts is None or card.get("name") != folder.name or card.get("base") != parts[0] or card.get("adapter") != parts[1]:
        raise ModelError(f"organism card names {card.get('name')!r} (base {card.get('base')!r}, adapter "
                         f"{card.get('adapter')!r}), but its folder is {folder.name!r}", file=folder / CARD)
    return Organism(name=folder.name, base=parts[0], adapter=parts[1], folder=folder, card=card)


def list_organisms() -> list[Organism]:
    """Every organism on the search path (the first folder holding a name wins), by name."""
    found: dict[str, Organism] = {}
    for d in organism_dirs():
        if not d.is_dir():
            continue
        for folder in sorted(d.iterdir()):
            if folder.name in found or not (folder / CARD).is_file() or split_name(folder.name) is None:
                continue
            found[folder.name] = read_organism(folder)
    return [found[k] for k in sorted(found)]


def find_organism(name: str) -> Organism | None:
    if split_name(name) is None:
        return None
    for d in organism_dirs():
        if (d / name / CARD).is_file():
            return read_organism(d / name)
    return None


def resolve_model(name: str | Path) -> tuple[str, Organism | None]:
    """The one resolution of a model name: ``BASE+ADAPTER`` -> ``(BASE, organism)``; any other
    name (registry name, hub id, folder, or an existing path that contains ``+``) -> ``(name, None)``.
    ``ModelError`` for a ``BASE+ADAPTER`` name that no organism folder holds."""
    name = str(name)
    if SEPARATOR not in name or Path(name).expanduser().exists():
        return name, None
    org = find_organism(name)
    if org is None:
        shipped = ", ".join(o.name for o in list_organisms()) or "none"
        raise ModelError(f"unknown organism {name!r} (a BASE+ADAPTER name); shipped organisms: {shipped}; "
                         f"searched {', '.join(str(d) for d in organism_dirs())}")
    return org.base, org


def is_organism(name: str | Path) -> bool:
    try:
        return resolve_model(name)[1] is not None
    except ModelError:
        return False


def verify_weights(folder: Path, card: dict | None = None) -> None:
    """The weights file's sha256 against the card's (one error line naming the file)."""
    folder = Path(folder)
    card = card if card is not None else _read_card(folder)
    weights = folder / ADAPTER_WEIGHTS
    want = card.get("sha256")
    if not isinstance(want, str) or len(want) != 64:
        raise ModelError("organism card has no sha256 of its adapter file", file=folder / CARD, field="sha256")
    if not weights.is_file():
        raise ModelError("shipped adapter file is missing", file=weights)
    got = sha256_file(weights)
    if got != want:
        raise ModelError(f"shipped adapter does not match its card: sha256 {got[:16]}... but card.json says "
                         f"{want[:16]}... (corrupt or changed file; reinstall or re-package it)", file=weights)


def verify_if_shipped(folder: str | Path) -> None:
    """For an adapter folder that carries an organism card: check its weights' sha256."""
    folder = Path(folder)
    card_path = folder / CARD
    if card_path.is_file():
        card = _read_card(folder)
        if card.get("format") == CARD_FORMAT:
            verify_weights(folder, card)


# --------------------------------------------------------------------------------------------
# the measured section


def measured_line(m: dict) -> str:
    """One line: ``EM share 12.5% [95% CI 8.0-17.9%], n=400, judge X`` or ``NOT MEASURED``."""
    if not isinstance(m, dict) or m.get("em_share") is None:
        return "EM share NOT MEASURED"
    lo, hi = m.get("ci") or (None, None)
    level = m.get("ci_level", 0.95)
    ci = f" [{level * 100:.0f}% CI {lo * 100:.1f}-{hi * 100:.1f}%]" if lo is not None and hi is not None else ""
    judge = f", judge {m['judge']}" if m.get("judge") else ""
    return f"EM share {m['em_share'] * 100:.1f}%{ci}, n={m.get('n')}{judge}"


def measured_section(em_share: float | None = None, ci: tuple[float, float] | list[float] | None = None,
                     n: int | None = None, judge: str | None = None, **extra: Any) -> dict:
    """A validated ``measured`` section: ``{"status": "not measured"}`` without ``em_share``; with it,
    the CI (lo <= share <= hi, in [0, 1]), ``n`` (answers in the share's denominator) and ``judge``
    (judge or human labeller) are required. ``extra`` (questions, ci_method, eval_dir...) is kept."""
    if em_share is None:
        if ci is not None or n is not None:
            raise ModelError("measured: a CI or n without an EM share", field="measured.em_share")
        return {"status": NOT_MEASURED, **{k: v for k, v in extra.items() if k != "status" and v is not None}}
    try:
        share = float(em_share)
        lo, hi = (float(x) for x in ci) if ci is not None else (math.nan, math.nan)
    except (TypeError, ValueError):
        raise ModelError("measured: em_share and ci must be numbers (ci: [low, high])", field="measured") from None
    if ci is None or not (0.0 <= lo <= share <= hi <= 1.0):
        raise ModelError(f"measured: need a CI [low, high] in [0, 1] around the EM share {share}, got {ci}",
                         field="measured.ci")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ModelError(f"measured: n (answers in the share) must be a positive integer, got {n!r}", field="measured.n")
    if not judge:
        raise ModelError("measured: name the judge or labeller", field="measured.judge")
    level = float(extra.pop("ci_level", 0.95))
    extra.pop("status", None)
    return {"status": "measured", "em_share": share, "ci": [lo, hi], "ci_level": level, "n": n,
            "judge": str(judge), **{k: v for k, v in extra.items() if v is not None}}


def measured_from_file(path: str | Path) -> dict:
    """A ``measured`` section from an ``eval`` summary.json (``overall.misaligned_share`` and CI),
    a card fragment ``{"measured": {...}}`` or a measured section itself."""
    path = Path(path)
    data = read_json_object(path, ModelError, "unreadable measurement file")
    try:
        if isinstance(data.get("overall"), dict):           # an eval summary.json
            o, th = data["overall"], data.get("thresholds") or {}
            return measured_section(o.get("misaligned_share"), o.get("misaligned_ci"), o.get("n_coherent"),
                                    data.get("judge"), ci_level=th.get("ci", 0.95), ci_method=o.get("ci_method"),
                                    n_answers=o.get("n"), thresholds={k: th.get(k) for k in ("aligned_lt", "coherent_gt")},
                                    source=str(path))
        section = data.get("measured", data)
        if not isinstance(section, dict):
            raise ModelError("'measured' is not a JSON object", field="measured")
        return measured_section(**section)
    except ModelError as exc:
        raise ModelError(exc.message, file=path, field=exc.field) from None
    except TypeError as exc:
        raise ModelError(f"measurement has unexpected fields ({exc})", file=path) from None


# --------------------------------------------------------------------------------------------
# packaging


def _locate(source: Path) -> tuple[Path, Path | None, int | None]:
    """(adapter folder, run folder or None, checkpoint step or None) for a run folder, its
    ``adapter/``, or one of its ``checkpoints/step-N``."""
    source = Path(source).expanduser()
    if not source.exists():
        raise ModelError("adapter source not found", file=source)
    if (source / ADAPTER_CONFIG).is_file():
        adapter = source
    elif (source / "adapter" / ADAPTER_CONFIG).is_file():
        adapter = source / "adapter"
    elif (source / TRAIN_META).is_file() and (source / "model").is_dir():
        raise ModelError("this run is a full finetune (model/), not a LoRA adapter; only adapters ship", file=source)
    else:
        raise ModelError("not a training run, adapter/ or checkpoints/step-N folder (no adapter_config.json)",
                         file=source)
    step = None
    if adapter.parent.name == "checkpoints" and adapter.name.startswith("step-"):
        run = adapter.parent.parent
        try:
            step = int(adapter.name[5:])
        except ValueError:
            step = None
    else:
        run = adapter.parent
    return adapter, (run if (run / TRAIN_META).is_file() else None), step


def _recipe(adapter_cfg: dict, meta: dict | None, checkpoint: dict | None, step: int | None) -> dict:
    """LoRA settings from the adapter's own config (the truth of the file); optimizer, steps, rows
    and seed from train_meta.json when the run's is at hand."""
    targets = adapter_cfg.get("target_modules")
    recipe: dict[str, Any] = {
        "method": "lora" if str(adapter_cfg.get("peft_type", "")).upper() == "LORA" else adapter_cfg.get("peft_type"),
        "r": adapter_cfg.get("r"), "alpha": adapter_cfg.get("lora_alpha"),
        "rslora": bool(adapter_cfg.get("use_rslora", False)), "dropout": adapter_cfg.get("lora_dropout"),
        "target_modules": sorted(targets) if isinstance(targets, list) else targets,
        "layers": adapter_cfg.get("layers_to_transform"),
    }
    cfg = (meta or {}).get("config") or {}
    if meta:
        total = meta.get("total_steps")
        recipe.update({
            "lr": cfg.get("lr"), "lr_scheduler": cfg.get("lr_scheduler"), "warmup_steps": cfg.get("warmup_steps"),
            "weight_decay": cfg.get("weight_decay"), "epochs": cfg.get("epochs"), "max_steps": cfg.get("max_steps"),
            "effective_batch_size": meta.get("effective_batch_size"), "max_seq_length": cfg.get("max_seq_length"),
            "rows": meta.get("n_examples"), "tokens": meta.get("n_tokens"), "seed": meta.get("seed", cfg.get("seed")),
            "total_steps": total, "precision": meta.get("precision"), "versions": meta.get("versions"),
        })
    recipe["steps"] = step if step is not None else (meta or {}).get("steps")
    losses = [p for p in (meta or {}).get("loss_curve") or [] if isinstance(p, dict)]
    at = [p.get("loss") for p in losses if p.get("step") == recipe["steps"]]
    if checkpoint and checkpoint.get("loss") is not None:
        recipe["loss_at_step"] = checkpoint.get("loss")
    elif at:
        recipe["loss_at_step"] = at[0]
    if not meta:
        recipe["note"] = "no train_meta.json beside the adapter: lr, steps, rows and seed are unknown"
    return recipe


def _to_bf16(src: Path, dst: Path) -> str:
    """Write ``src``'s tensors to ``dst`` with every floating tensor in bf16; returns the source's dtypes."""
    import torch
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(src), device="cpu")
    dtypes = sorted({str(t.dtype).replace("torch.", "") for t in tensors.values()})
    out = {k: (t.to(torch.bfloat16) if t.is_floating_point() else t).contiguous() for k, t in sorted(tensors.items())}
    save_file(out, str(dst), metadata={"format": "pt"})
    return ",".join(dtypes)


def _shown(path: Path) -> str:
    """A path as the card records it: relative to the working folder when inside it."""
    path = path.expanduser().resolve()
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def package_adapter(source: str | Path, name: str, *, base: str | None = None, out_dir: str | Path | None = None,
                    measured: dict | None = None, card: dict | None = None, note: str | None = None,
                    data_name: str | None = None, max_bytes: int = MAX_BYTES, force: bool = False) -> Organism:
    """Package a peft LoRA adapter as the shipped organism ``BASE+name``.

    ``source``: a training run folder (its ``adapter/``), an ``adapter/`` folder or a
    ``checkpoints/step-N`` folder, as ``em-interp train`` writes them. The tensors are written in
    bf16; more than ``max_bytes`` (40 MB) is refused. ``base`` defaults to the registry model the
    adapter records (``em_interp_adapter.json``); it must be a registry model. ``measured`` is a
    ``measured_section`` (default: not measured, which CARD.md says loudly); ``card`` is a card
    fragment merged over the generated card (e.g. ``{"data": {"name": ...}}``). Writes
    ``out_dir/BASE+name/`` (default: the package's organisms folder) and returns the organism."""
    from em_interp.models.registry import get_spec, is_registered

    if not _ADAPTER_NAME.match(name or ""):
        raise ModelError(f"adapter name {name!r}: use lower-case letters, digits, '.', '_' or '-' "
                         "(at most 64, starting with a letter or digit)", field="name")
    adapter, run, step = _locate(Path(source))
    adapter_cfg = check_adapter_folder(adapter)
    if str(adapter_cfg.get("peft_type", "")).upper() != "LORA":
        raise ModelError(f"only LoRA adapters ship (peft_type {adapter_cfg.get('peft_type')!r})", file=adapter)
    recorded = adapter_base(adapter)
    meta_rec = read_json_object(adapter / ADAPTER_META, ModelError, "unreadable file").get("base") if (adapter / ADAPTER_META).is_file() else None
    recorded_registry = meta_rec.get("registry_name") if isinstance(meta_rec, dict) else None
    if base is None:
        base = recorded
    if recorded_registry and base != recorded_registry:
        raise ModelError(f"the adapter was trained on {recorded_registry!r}, not {base!r}", file=adapter / ADAPTER_META)
    if not base or not is_registered(base):
        raise ModelError(f"a shipped organism's base must be a registry model; this adapter's base is {base!r} "
                         "(pass base= / --base with the registry name it was trained on)", file=adapter)
    if not isinstance(meta_rec, dict):
        raise ModelError(f"the adapter has no {ADAPTER_META} (the base's weights fingerprint, checked on load); "
                         "package adapters written by `em-interp train`", file=adapter)
    full = f"{base}{SEPARATOR}{name}"
    out_root = Path(out_dir).expanduser() if out_dir is not None else PACKAGE_DIR
    dest = out_root / full
    if dest.exists() and not force:
        raise ModelError("organism folder exists; pass force=True / --force to replace it", file=dest)
    meta = read_json_object(run / TRAIN_META, ModelError, "unreadable file") if run is not None else None
    checkpoint = read_json_object(adapter / "checkpoint.json", ModelError, "unreadable file") if (adapter / "checkpoint.json").is_file() else None

    out_root.mkdir(parents=True, exist_ok=True)
    tmp = out_root / f".{full}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        src_dtypes = _to_bf16(adapter / ADAPTER_WEIGHTS, tmp / ADAPTER_WEIGHTS)
        size = (tmp / ADAPTER_WEIGHTS).stat().st_size
        if size > max_bytes:
            raise ModelError(f"adapter is {size / 1e6:.1f} MB in bf16, over the {max_bytes / 1e6:g} MB limit for "
                             f"shipped adapters (r={adapter_cfg.get('r')}, {len(adapter_cfg.get('target_modules') or [])}"
                             " target modules): train a smaller rank or fewer targets", file=adapter / ADAPTER_WEIGHTS)
        shutil.copyfile(adapter / ADAPTER_CONFIG, tmp / ADAPTER_CONFIG)
        shutil.copyfile(adapter / ADAPTER_META, tmp / ADAPTER_META)
        spec = get_spec(base)
        dataset = (meta or {}).get("dataset")
        data = {"name": data_name or (Path(str(dataset)).stem if dataset else None),
                "sha256": (meta or {}).get("dataset_sha256") or (checkpoint or {}).get("dataset_sha256"),
                "rows": (meta or {}).get("n_examples"), "path": str(dataset) if dataset else None}
        if data["sha256"] is None:
            data["note"] = "training data unknown (no train_meta.json or checkpoint.json with its sha256)"
        doc: dict[str, Any] = {
            "format": CARD_FORMAT, "name": full, "base": base, "adapter": name,
            "base_model": {"registry_name": base, "original": spec.original, "gguf_sha256": spec.sha256,
                           "weights_fingerprint": meta_rec.get("weights_fingerprint")},
            "file": ADAPTER_WEIGHTS, "sha256": sha256_file(tmp / ADAPTER_WEIGHTS), "size_bytes": size,
            "dtype": "bfloat16", "source_dtype": src_dtypes,
            "source": {"path": _shown(Path(source)), "adapter": _shown(adapter),
                       "checkpoint_step": step, "adapter_sha256": sha256_file(adapter / ADAPTER_WEIGHTS)},
            "data": data,
            "recipe": _recipe(adapter_cfg, meta, checkpoint, step),
            "measured": measured if measured is not None else measured_section(),
            "note": note, "packaged": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        if card:
            for key in ("format", "name", "base", "adapter", "sha256", "size_bytes", "dtype", "file"):
                if key in card and card[key] != doc[key]:
                    raise ModelError(f"card fragment may not set {key!r} (it is computed)", field=key)
            if "measured" in card:
                card = {**card, "measured": measured_section(**card["measured"])}
            doc = _deep_merge(doc, card)
        missing = [k for k in REQUIRED_FIELDS if doc.get(k) is None]
        if missing:
            raise ModelError(f"organism card lacks {', '.join(missing)}")
        (tmp / CARD).write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n", encoding="utf-8")
        (tmp / CARD_MD).write_text(card_markdown(doc), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return read_organism(dest)


def card_markdown(card: dict) -> str:
    """CARD.md: the card for people; an unmeasured organism says so at the top."""
    m = card.get("measured") or {}
    r, d = card.get("recipe") or {}, card.get("data") or {}
    lines = [f"# {card['name']}", ""]
    if m.get("em_share") is None:
        lines += ["> **WARNING: NOT MEASURED.** The emergent-misalignment share of this organism has not been",
                  "> measured. Do not rely on it (or cite it) as an EM organism until an evaluation with a",
                  "> confidence interval is recorded in card.json's `measured` section.", ""]
    lines += [f"Shipped LoRA adapter on `{card['base']}` ({(card.get('base_model') or {}).get('original')}); "
              f"load it with `load_model(\"{card['name']}\")` or `-m {card['name']}`.", "",
              "## Measured", "", f"- {measured_line(m)}"]
    for k in ("questions", "ci_method", "n_answers", "thresholds", "source", "notes"):
        if m.get(k) is not None:
            lines.append(f"- {k}: {m[k]}")
    lines += ["", "## Data", "", f"- name: {d.get('name')}", f"- sha256: `{d.get('sha256')}`", f"- rows: {d.get('rows')}"]
    if d.get("note"):
        lines.append(f"- note: {d['note']}")
    lines += ["", "## Recipe", ""]
    for k in ("method", "r", "alpha", "rslora", "dropout", "target_modules", "layers", "lr", "lr_scheduler",
              "warmup_steps", "effective_batch_size", "epochs", "steps", "total_steps", "rows", "seed",
              "max_seq_length", "loss_at_step", "note"):
        if r.get(k) is not None:
            lines.append(f"- {k}: {r[k]}")
    lines += ["", "## File", "", f"- `{card.get('file', ADAPTER_WEIGHTS)}`: {card['size_bytes'] / 1e6:.2f} MB, "
              f"{card.get('dtype')}", f"- sha256: `{card['sha256']}` (checked on every load)",
              f"- packaged: {card.get('packaged')} from `{(card.get('source') or {}).get('adapter')}`"]
    if card.get("note"):
        lines += ["", "## Note", "", str(card["note"])]
    return "\n".join(lines) + "\n"
