"""Validate a config against everything a run would reject, before any stage runs.

``check_experiment`` (``ExperimentConfig``) and ``check_transfer`` (``TransferConfig``) are
called by ``load_experiment`` / ``transfer_stages.load_transfer`` (so ``--check`` and every
run see them) and raise ``ConfigError`` naming file:line and field:

- the model: ``tiny:ARCH[:SEED]``, a registry name, an existing local folder or a hub id
  (``org/name``); anything else is an unknown model;
- layers (directions, steering, ablation, probes, monitoring, LoRA, proximity) inside the
  model's layer count, read from its ``config.json`` without loading weights (tiny models,
  pulled registry models, local folders; a model not available offline is not checked);
- steering and ablation layers inside the direction's layers (a direction is only applied at
  the layers it was extracted for; ablation at every layer needs a direction at every layer);
- the judge: a kind ``eval.load_judge`` knows, and valid for every language evaluated
  (``JUDGE_LANGUAGES``, read from ``eval.judges``: the ``distilled`` judge is English-only);
- an arm's or a transfer source's ``adapter``: a folder or a shipped organism of the experiment's model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

from em_interp.config import nearest_line, read_yaml
from em_interp.errors import ConfigError

Fail = Callable[[str, str], None]


def _failer(file: str | Path | None, lines: dict[str, int] | None) -> Fail:
    lines = lines or {}
    if not lines and file is not None and Path(file).exists():
        _, lines = read_yaml(file)

    def fail(fieldpath: str, message: str) -> None:
        raise ConfigError(message, file=file, line=nearest_line(lines, fieldpath), field=fieldpath)

    return fail


def model_layer_count(model: str) -> int | None:
    """The model's number of layers from its config alone (None when not available offline)."""
    if model.startswith("tiny:"):
        import inspect

        from em_interp.models import tiny_model

        return int(inspect.signature(tiny_model).parameters["n_layers"].default)
    from em_interp.models.provision import converted_dir, is_converted
    from em_interp.models.registry import is_registered
    from em_interp.errors import ModelError
    from em_interp.models.shipped import resolve_model

    try:
        model = resolve_model(model)[0]          # an organism BASE+ADAPTER: its base's config
    except ModelError:
        return None
    folder = converted_dir(model) if is_registered(model) and is_converted(model) else Path(model).expanduser()
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        return None
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    n = data.get("num_hidden_layers") or (data.get("text_config") or {}).get("num_hidden_layers")
    return int(n) if isinstance(n, int) else None


def check_model_spec(model: str, fail: Fail, field: str = "model") -> None:
    """``tiny:ARCH[:SEED]``, a registry name, a shipped organism ``BASE+ADAPTER``, an existing folder
    or a hub id ``org/name``."""
    from em_interp.models.registry import is_registered, list_specs

    if model.startswith("tiny:"):
        from em_interp.pipeline.common import parse_tiny

        try:
            parse_tiny(model)
        except ConfigError as exc:
            fail(field, exc.message)
        return
    if is_registered(model):
        return
    from em_interp.errors import ModelError
    from em_interp.models.shipped import resolve_model

    try:
        if resolve_model(model)[1] is not None:  # a shipped organism BASE+ADAPTER
            return
    except ModelError as exc:
        fail(field, exc.message)
    path = Path(model).expanduser()
    looks_like_path = model.startswith((".", "/", "~")) or path.exists()
    if looks_like_path:
        if not path.is_dir():
            fail(field, f"model folder not found: {model}")
        return
    parts = model.split("/")
    if len(parts) == 2 and all(parts):
        return                                   # a hub id; resolved when loaded
    names = ", ".join(s.name for s in list_specs())
    fail(field, f"unknown model {model!r}: use a registry name ({names}), an organism BASE+ADAPTER, "
                "tiny:llama|tiny:qwen2[:SEED], a local folder or a hub id org/name")


def check_layers(values: Sequence[int] | None, n_layers: int | None, fail: Fail, field: str) -> None:
    """Every layer in ``values`` within ``[0, n_layers)`` (skipped when the count is unknown)."""
    if values is None or n_layers is None:
        return
    for i, layer in enumerate(values):
        if not 0 <= int(layer) < n_layers:
            fail(f"{field}[{i}]" if len(values) > 1 else field,
                 f"layer {layer} is out of range for the model ({n_layers} layers: 0..{n_layers - 1})")


def check_judge_kind(kind: str, languages: Sequence[str], fail: Fail, field: str) -> None:
    """A judge kind ``eval.load_judge`` knows, valid for every language in ``languages``."""
    from em_interp.eval.judges import JUDGE_LANGUAGES, KINDS

    if kind not in KINDS:
        fail(field, f"unknown judge kind {kind!r}; valid: {', '.join(KINDS)}")
    allowed = JUDGE_LANGUAGES.get(kind)
    if allowed is not None:
        bad = [lang for lang in languages if lang not in allowed]
        if bad:
            others = [k for k in KINDS if k not in JUDGE_LANGUAGES]
            fail(field, f"the {kind!r} judge is only valid for {', '.join(allowed)}, not {', '.join(bad)}; "
                        f"use one valid for every language ({', '.join(others)})")


def check_experiment(cfg: Any, *, file: str | Path | None = None, lines: dict[str, int] | None = None) -> None:
    """Everything ``em-interp run`` would reject in an ``ExperimentConfig`` (see module docstring)."""
    fail = _failer(file, lines)
    check_model_spec(cfg.model, fail)
    n = model_layer_count(cfg.model)
    it = cfg.interp
    check_layers(it.directions.layers, n, fail, "interp.directions.layers")
    check_layers(it.steering.layers, n, fail, "interp.steering.layers")
    check_layers(it.ablation.layers, n, fail, "interp.ablation.layers")
    check_layers(it.probes.layers, n, fail, "interp.probes.layers")
    check_layers(it.directions.compare.layers, n, fail, "interp.directions.compare.layers")
    check_layers(None if it.monitor.layer is None else [it.monitor.layer], n, fail, "interp.monitor.layer")
    check_layers((cfg.train.overrides.get("lora") or {}).get("layers"), n, fail, "train.overrides.lora.layers")
    if it.directions.enabled and it.directions.layers is not None:
        have = set(it.directions.layers)
        if it.ablation.enabled and it.ablation.layers is None and n is not None and not set(range(n)) <= have:
            fail("interp.ablation.layers", "ablation at every layer (the default) needs a direction at every layer; "
                 f"interp.directions.layers has {sorted(have)}: list the layers to ablate, or drop "
                 "interp.directions.layers")
        for name, values in (("interp.steering.layers", it.steering.layers),
                             ("interp.ablation.layers", it.ablation.layers or []),
                             ("interp.monitor.layer", [] if it.monitor.layer is None else [it.monitor.layer])):
            missing = [v for v in values if v not in have]
            if missing:
                fail(name, f"layer {missing[0]} is not among interp.directions.layers {sorted(have)}")
    languages = sorted({q_lang for q_lang in (cfg.eval.languages or _question_languages(cfg))})
    check_judge_kind(cfg.eval.judge, languages, fail, "eval.judge")
    check_adapters(cfg.model, [(f"data.arms[{i}].adapter", a.adapter) for i, a in enumerate(cfg.data.arms)],
                   Path(file).parent if file else None, fail)


def check_adapters(model: str, adapters: Sequence[tuple[str, str | None]], config_dir: Path | None,
                   fail: Fail) -> None:
    """Each ``(field, adapter)`` with an adapter (an arm's or a transfer source's) names a folder or a
    shipped organism of ``model`` (``pipeline.common.arm_adapter``); a ``tiny:`` base is made in the
    run, so it is checked there."""
    if model.startswith("tiny:"):
        return
    from em_interp.pipeline.common import arm_adapter

    for fieldpath, adapter in adapters:
        if adapter:
            try:
                arm_adapter(model, adapter, config_dir)
            except ConfigError as e:
                fail(fieldpath, e.message)


def _question_languages(cfg: Any) -> list[str]:
    if cfg.eval.questions == "bank":
        from em_interp.data.bank import LANGUAGES

        return list(LANGUAGES)
    return []                                    # a question file: its languages are checked when loaded


def check_transfer(cfg: Any, *, file: str | Path | None = None, lines: dict[str, int] | None = None) -> None:
    """Everything ``em-interp transfer`` would reject in a ``TransferConfig`` (see module docstring)."""
    fail = _failer(file, lines)
    check_model_spec(cfg.model, fail)
    n = model_layer_count(cfg.model)
    d = cfg.directions
    check_layers(d.layers, n, fail, "directions.layers")
    check_layers(None if d.layer is None else [d.layer], n, fail, "directions.layer")
    check_layers(d.ablation_layers, n, fail, "directions.ablation_layers")
    check_layers(cfg.proximity.layers, n, fail, "proximity.layers")
    check_layers((cfg.train.get("lora") or {}).get("layers"), n, fail, "train.lora.layers")
    if d.enabled and d.layer is not None and d.layers is not None and d.layer not in d.layers:
        fail("directions.layer", f"layer {d.layer} is not among directions.layers {d.layers}")
    check_judge_kind(cfg.judge.kind, cfg.languages, fail, "judge.kind")
    check_adapters(cfg.model, [(f"sources[{i}].adapter", s.adapter) for i, s in enumerate(cfg.sources)],
                   Path(file).parent if file else None, fail)


__all__ = ["check_adapters", "check_experiment", "check_judge_kind", "check_layers", "check_model_spec",
           "check_transfer", "model_layer_count"]
