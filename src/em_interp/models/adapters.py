"""peft adapters that say which base they belong to, and are checked before they attach.

``record_adapter_base(folder, model)`` (called by the training loop after it saves an
adapter) writes ``em_interp_adapter.json`` beside ``adapter_config.json``: the base model's
registry name, Hugging Face hub id, GGUF source (packages + sha256), its config shape and a
weights fingerprint, and points ``adapter_config.json``'s ``base_model_name_or_path`` at the
hub id (not a local cache path) so the adapter loads elsewhere with plain peft.

``attach_adapter`` checks the folder before peft sees it (no weights -> error, never a Hub
download; corrupt config or weights -> one line naming the file) and refuses a base other
than the recorded one (different shapes or weights fingerprint) unless
``allow_base_mismatch=True``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from em_interp.errors import ModelError
from em_interp.jsonl import read_json_object
from em_interp.tensorfiles import check_safetensors

ADAPTER_META = "em_interp_adapter.json"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
SHAPE_KEYS = ("model_type", "num_hidden_layers", "hidden_size", "intermediate_size", "vocab_size",
              "num_attention_heads", "num_key_value_heads")


def _base_module(model: Any) -> Any:
    """The plain HF module under a peft wrapper (or the module itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def base_shape(model: Any) -> dict[str, Any]:
    """The config fields that must agree between an adapter's base and the model it meets."""
    cfg = _base_module(model).config
    return {k: getattr(cfg, k, None) for k in SHAPE_KEYS}


def weights_fingerprint(model: Any, n_params: int = 4, n_values: int = 512) -> str:
    """Short hash of the first/last few base weight tensors' leading values, rounded to bf16
    (so fp32 and bf16 loads of one checkpoint agree); LoRA weights are left out."""
    import torch

    named: dict[str, Any] = {}
    for name, p in _base_module(model).named_parameters():
        if "lora_" in name or "modules_to_save" in name:
            continue
        named[name.replace(".base_layer", "")] = p
    names = sorted(named)
    pick = names[:n_params] + [n for n in names[-n_params:] if n not in names[:n_params]]
    h = hashlib.sha256()
    with torch.no_grad():
        for name in pick:
            values = named[name].detach().reshape(-1)[:n_values].to("cpu", torch.float32).to(torch.bfloat16)
            h.update(name.encode() + str(tuple(named[name].shape)).encode())
            h.update(values.view(torch.int16).numpy().tobytes())
    return h.hexdigest()[:16]


def base_identity(model: Any) -> dict[str, Any]:
    """What an adapter records about its base: registry name, hub id, GGUF source (when the
    base came from the registry cache), shape and weights fingerprint."""
    from em_interp.models.provision import MARKER
    from em_interp.models.registry import is_registered, get_spec

    source = str(getattr(_base_module(model), "name_or_path", "") or "")
    ident: dict[str, Any] = {"source": source or None, "registry_name": None, "hub_id": None, "gguf": None}
    marker = Path(source) / MARKER if source else None
    if marker is not None and marker.is_file():
        try:
            meta = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            meta = {}
        name = meta.get("name")
        if isinstance(name, str) and is_registered(name):
            spec = get_spec(name)
            ident.update(registry_name=name, hub_id=spec.original,
                         gguf={"file": spec.gguf_filename, "sha256": spec.sha256,
                               "packages": [f"{p}=={v}" for p, v in spec.packages]})
    elif source and is_registered(source):
        spec = get_spec(source)
        ident.update(registry_name=source, hub_id=spec.original)
    elif source and not Path(source).exists() and source.count("/") == 1:
        ident["hub_id"] = source
    ident.update(shape=base_shape(model), weights_fingerprint=weights_fingerprint(model))
    return ident


def record_adapter_base(folder: str | Path, model: Any, organism: str | None = None) -> Path:
    """Write ``em_interp_adapter.json`` for the adapter just saved in ``folder`` and point its
    ``adapter_config.json`` at the base's hub id (or registry name). ``organism``: the
    ``BASE+ADAPTER`` name of a shipped organism the model was trained on top of (merged into
    the weights), recorded as the base instead, so ``load_model(folder)`` folds it in again.
    Returns the meta path."""
    folder = Path(folder)
    ident = base_identity(model)
    if organism is not None:
        ident.update(registry_name=organism, hub_id=None, organism_base=ident["registry_name"])
    meta_path = folder / ADAPTER_META
    meta_path.write_text(json.dumps({"base": ident}, indent=1), encoding="utf-8")
    cfg_path = folder / ADAPTER_CONFIG
    portable = ident["hub_id"] or ident["registry_name"]
    if portable and cfg_path.is_file():
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        cfg["base_model_name_or_path"] = portable
        cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True), encoding="utf-8")
    card = folder / "README.md"   # peft's model card front matter names the base too
    if portable and card.is_file():
        lines = card.read_text(encoding="utf-8").splitlines()
        card.write_text("\n".join(f"base_model: {portable}" if ln.startswith("base_model:") else ln
                                   for ln in lines) + "\n", encoding="utf-8")
    return meta_path


def adapter_base(folder: str | Path) -> str | None:
    """The model an adapter folder was trained on, as ``load_model`` accepts it: the registry
    name recorded in ``em_interp_adapter.json`` (the exact weights it was trained on), else
    ``adapter_config.json``'s ``base_model_name_or_path``; None for a folder that is not an adapter."""
    folder = Path(folder)
    if not (folder / ADAPTER_CONFIG).is_file():
        return None
    meta = folder / ADAPTER_META
    if meta.is_file():
        base = _read_json(meta).get("base")
        name = base.get("registry_name") if isinstance(base, dict) else None
        if isinstance(name, str) and name:
            return name
    base = _read_json(folder / ADAPTER_CONFIG).get("base_model_name_or_path")
    return base if isinstance(base, str) and base else None


def _read_json(path: Path) -> dict[str, Any]:
    return read_json_object(path, ModelError, "corrupt adapter file")


def check_adapter_folder(adapter: str | Path) -> dict[str, Any]:
    """Validate an adapter folder before peft reads it; returns its ``adapter_config.json``."""
    adapter = Path(adapter)
    if not adapter.is_dir():
        raise ModelError("adapter folder not found" if not adapter.exists() else "adapter is not a folder",
                         file=adapter)
    cfg_path = adapter / ADAPTER_CONFIG
    if not cfg_path.is_file():
        raise ModelError(f"not a peft adapter folder (no {ADAPTER_CONFIG})", file=adapter)
    cfg = _read_json(cfg_path)
    if not isinstance(cfg.get("peft_type"), str):
        raise ModelError("adapter config has no 'peft_type'", file=cfg_path, field="peft_type")
    weights = adapter / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickled = (adapter / "adapter_model.bin").is_file()
        raise ModelError(f"adapter folder has no {ADAPTER_WEIGHTS}" + (" (only a pickled .bin, which is not loaded)"
                         if pickled else "") + "; refusing to let peft look for it on the Hub", file=adapter)
    check_safetensors(weights, ModelError)
    return cfg


def check_adapter_base(adapter: str | Path, model: Any, *, allow_base_mismatch: bool = False,
                       model_name: str | None = None) -> None:
    """``ModelError`` if the adapter records another base than ``model`` (shape, then weights
    fingerprint; for adapters without our record, the base name peft stored)."""
    adapter = Path(adapter)
    meta_path = adapter / ADAPTER_META
    hint = "; pass allow_base_mismatch=True to attach it anyway"
    if meta_path.is_file():
        base = _read_json(meta_path).get("base")
        if not isinstance(base, dict):
            raise ModelError("corrupt adapter metadata (no 'base' record)", file=meta_path, field="base")
        label = base.get("registry_name") or base.get("hub_id") or base.get("source") or "its base"
        have_shape = base_shape(model)
        rec_shape = base.get("shape") or {}
        diff = [k for k in SHAPE_KEYS if k in rec_shape and rec_shape[k] != have_shape.get(k)]
        if diff and not allow_base_mismatch:
            k = diff[0]
            raise ModelError(f"adapter was trained on {label} with {k}={rec_shape[k]}, but the model it is "
                             f"attached to has {k}={have_shape.get(k)}{hint}", file=adapter)
        if not diff and base.get("weights_fingerprint") != weights_fingerprint(model) and not allow_base_mismatch:
            raise ModelError(f"adapter was trained on {label} (weights fingerprint {base.get('weights_fingerprint')}),"
                             f" but the model it is attached to ({model_name or 'given model'}) has other weights "
                             f"({weights_fingerprint(model)}){hint}", file=adapter)
        return
    recorded = _read_json(adapter / ADAPTER_CONFIG).get("base_model_name_or_path")
    if not recorded or allow_base_mismatch:
        return
    ident = base_identity(model)
    source = str(getattr(_base_module(model), "name_or_path", "") or "")
    known = {model_name, source, ident.get("registry_name"), ident.get("hub_id")} - {None, ""}
    same_path = Path(str(recorded)).exists() and source and Path(str(recorded)).resolve() == Path(source).resolve()
    if str(recorded) not in known and not same_path:
        raise ModelError(f"adapter's adapter_config.json names base {recorded!r}, but it is being attached to "
                         f"{model_name or source!r}{hint}", file=adapter / ADAPTER_CONFIG)


def attach_adapter(model: Any, adapter: str | Path, merge: bool = False, *, allow_base_mismatch: bool = False,
                   model_name: str | None = None):
    """Attach a checked peft adapter folder to ``model`` (optionally merged into the weights)."""
    from peft import PeftModel

    check_adapter_folder(adapter)
    check_adapter_base(adapter, model, allow_base_mismatch=allow_base_mismatch, model_name=model_name)
    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"could not attach adapter: {first[:300]}", file=adapter) from None
    return peft_model.merge_and_unload() if merge else peft_model
