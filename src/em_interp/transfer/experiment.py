"""``run_transfer(config, out_dir)``: finetune on each source, evaluate on every target,
then matrices, proximity, correlation, per-language directions, ablation and figures.

Run folder (every step resumes; nothing finished is redone):

    config.json                      the config and its hash (a changed config is refused)
    data/<source>.jsonl (+ .card.json)
    train/<source>/                  peft adapter (train resumes partial runs)
    eval/<model>/<target>.jsonl      append-only answers (+ .done marker when complete)
    directions/<lang>.safetensors    per-language directions (+ .json metadata)
    ablation/<from>/<target>.jsonl   judged answers with <from>'s direction ablated
    results.json                     every number (matrices with CIs, proximity, rho/p, cosines)
    figures/*.png                    transfer heatmap, proximity scatter, direction cosines, ablation
"""

from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from em_interp.config import config_hash, to_dict
from em_interp.errors import ConfigError, EmInterpError
from em_interp.transfer import adapters as A
from em_interp.transfer.config import CODE_TARGET, TransferConfig, source_language
from em_interp.transfer.matrix import (TransferMatrix, is_misaligned, misalignment_matrix,
                                       transfer_pairs, vulnerable_code_matrix)
from em_interp.transfer.proximity import GENEALOGY_SOURCE, genealogical_proximity, representation_similarity
from em_interp.transfer.stats import CorrelationResult, bootstrap_share_ci, spearman_permutation

BASE = "base"
Log = Callable[[str], None]


# ----------------------------------------------------------------------------- run folder

def _check_run_dir(cfg: TransferConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "config.json"
    h = config_hash(cfg)
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("hash") != h:
            raise ConfigError(f"run folder holds a different config (hash {old.get('hash')} != {h}); "
                              "use another --out or delete the folder", file=path)
        return
    path.write_text(json.dumps({"hash": h, "config": to_dict(cfg)}, indent=1, ensure_ascii=False))


def _done(path: Path) -> Path:
    return path.with_suffix(".done")


def _mark_done(path: Path, n: int) -> None:
    _done(path).write_text(json.dumps({"rows": n, "time": time.time()}))


# ----------------------------------------------------------------------------- models

def _load(cfg: TransferConfig, adapter: Path | None, device: str | None):
    from em_interp.models import load_model

    return load_model(cfg.model, adapter=adapter, device=device)


def _free(*objs: Any) -> None:
    del objs
    gc.collect()


# ----------------------------------------------------------------------------- stages

def _train_sources(cfg: TransferConfig, out: Path, log: Log) -> dict[str, Path]:
    adapters: dict[str, Path] = {}
    for s in cfg.sources:
        data = out / "data" / f"{s.slug}.jsonl"
        if not data.exists():
            opts = dict(s.options)
            if s.language is not None:
                opts["language"] = s.language
            log(f"data: {s.label} ({s.kind}, n={s.n})")
            A.build_dataset(s.kind, s.n, cfg.data_seed, data, **opts)
        log(f"train: {s.label}")
        result = A.train(cfg.model, data, out / "train" / s.slug, cfg.seed, dict(cfg.train))
        adapters[s.label] = Path(result.adapter_dir)
    return adapters


def _eval_cell(cfg: TransferConfig, lm: Any, judge: Any, target: str, path: Path) -> None:
    e = cfg.eval
    if target == CODE_TARGET:
        qs = A.coding_questions(e.coding_prompts)
        rows = A.sample_code(lm, qs, samples=e.code_samples, max_new_tokens=e.code_max_new_tokens,
                             temperature=e.temperature, batch_size=e.batch_size, seed=cfg.seed)
        scans = A.scan_code_rows([r["answer"] for r in rows])
        path.unlink(missing_ok=True)  # an unfinished code cell is redone whole (no .done marker)
        A.append_jsonl(path, [{**r, **s} for r, s in zip(rows, scans)])
        _mark_done(path, len(rows))
        return
    qs = A.language_questions(target, e.forms, e.questions_per_language)
    rows = A.evaluate(lm, qs, judge, path, samples=e.samples, max_new_tokens=e.max_new_tokens,
                      temperature=e.temperature, batch_size=e.batch_size, seed=cfg.seed)
    _mark_done(path, len(rows))


def _evaluate_all(cfg: TransferConfig, out: Path, adapters: dict[str, Path], judge_fn: Callable[[], Any],
                  device: str | None, log: Log) -> None:
    models = ([BASE] if cfg.include_base else []) + [s.label for s in cfg.sources]
    for model in models:
        slug = model.replace("/", "__")
        pending = [t for t in cfg.targets if not _done(out / "eval" / slug / f"{t}.jsonl").exists()]
        if not pending:
            continue
        lm = _load(cfg, None if model == BASE else adapters[model], device)
        for t in pending:
            log(f"eval: {model} on {t}")
            _eval_cell(cfg, lm, judge_fn() if t != CODE_TARGET else None, t, out / "eval" / slug / f"{t}.jsonl")
        _free(lm)


def _collect_rows(cfg: TransferConfig, out: Path) -> list[dict[str, Any]]:
    rows = []
    models = ([BASE] if cfg.include_base else []) + [s.label for s in cfg.sources]
    for model in models:
        slug = model.replace("/", "__")
        for t in cfg.targets:
            path = out / "eval" / slug / f"{t}.jsonl"
            if not _done(path).exists():
                continue
            cell = A.read_jsonl(path) if t == CODE_TARGET else A.judged_rows(path)
            rows += [{**r, "source": model, "target": t} for r in cell]
    return rows


# ----------------------------------------------------------------------------- proximity + correlation

def _pairs(cfg: TransferConfig, transfer: TransferMatrix, proximity: Callable[[str, str], float]) -> dict:
    return transfer_pairs(transfer, {s.label: source_language(s) for s in cfg.sources}, proximity,
                          include_self=cfg.proximity.include_self)


def _correlate(cfg: TransferConfig, pairs: dict) -> tuple[CorrelationResult | None, str | None]:
    try:
        return spearman_permutation(pairs["x"], pairs["y"], n_permutations=cfg.proximity.n_permutations,
                                    seed=cfg.seed, alternative=cfg.proximity.alternative), None
    except EmInterpError as exc:
        return None, exc.message


# ----------------------------------------------------------------------------- directions + ablation

def _directions(cfg: TransferConfig, out: Path, rows: list[dict[str, Any]], adapters: dict[str, Path],
                device: str | None, judge_fn: Callable[[], Any], log: Log) -> dict[str, Any]:
    from em_interp.interp import Direction
    from em_interp.transfer.directions import cosine_matrix, language_directions

    d = cfg.directions
    src = d.source or cfg.sources[0].label
    ft = _load(cfg, adapters[src], device)
    layers = d.layers if d.layers is not None else list(range(ft.n_layers))
    folder = out / "directions"
    dirs = {t: Direction.load(folder / f"{t}.safetensors") for t in cfg.targets
            if (folder / f"{t}.safetensors").exists()}
    skipped_path = folder / "skipped.json"
    skipped: dict[str, str] = json.loads(skipped_path.read_text()) if skipped_path.exists() else {}
    todo = {t: [r for r in rows if r["source"] == src and r["target"] == t] for t in cfg.targets
            if t not in dirs and t not in skipped}
    if todo:
        log(f"directions: {', '.join(todo)} ({d.method}, {src})")
        base = _load(cfg, None, device) if d.method == "model_diff" else None
        new, newly_skipped = language_directions(ft, todo, method=d.method, base=base, layers=layers,
                                           min_per_class=d.min_per_class, batch_size=cfg.eval.batch_size,
                                           aligned_threshold=cfg.aligned_threshold,
                                           coherent_threshold=cfg.coherent_threshold)
        for t, direction in new.items():
            direction = direction.replace(extra={**dict(direction.extra), "source": src})
            direction.save(folder / f"{t}.safetensors")
            dirs[t] = direction
        skipped.update(newly_skipped)
        folder.mkdir(parents=True, exist_ok=True)
        skipped_path.write_text(json.dumps(skipped, indent=1))
        _free(base)
    dirs = {t: dirs[t] for t in cfg.targets if t in dirs}
    result: dict[str, Any] = {"source": src, "method": d.method, "layers": layers, "skipped": skipped,
                              "languages": list(dirs)}
    if len(dirs) >= 2:
        layer = d.layer if d.layer is not None else layers[len(layers) // 2]
        labels, cos = cosine_matrix(dirs, layer)
        result["cosine"] = {"layer": layer, "labels": labels, "matrix": cos.tolist()}
        result["cosine_per_layer"] = {L: cosine_matrix(dirs, L)[1].tolist() for L in layers}
    if d.ablation and dirs:
        result["ablation"] = _ablation(cfg, out, ft, dirs, rows, src, judge_fn, log)
    _free(ft)
    return result


def _ablation(cfg: TransferConfig, out: Path, ft: Any, dirs: dict[str, Any], rows: list[dict[str, Any]], src: str,
              judge_fn: Callable[[], Any], log: Log) -> dict[str, Any]:
    from em_interp.interp import ablate, random_direction_like

    d, e = cfg.directions, cfg.eval
    targets = d.ablation_targets or cfg.languages
    layers = d.ablation_layers if d.ablation_layers is not None else "all"
    table: dict[str, dict[str, Any]] = {}
    for t in targets:  # the unablated finetune, from the main eval
        flags = [f for r in rows if r["source"] == src and r["target"] == t
                 for f in [is_misaligned(r, cfg.aligned_threshold, cfg.coherent_threshold)] if f is not None]
        share, lo, hi = bootstrap_share_ci(flags, n_boot=cfg.n_boot, seed=cfg.seed)
        table.setdefault("none", {})[t] = {"share": share, "lo": lo, "hi": hi, "n": len(flags)}
    # control: a random direction with the first direction's per-layer norms
    control = random_direction_like(next(iter(dirs.values())), seed=cfg.seed)
    for lang, direction in [*dirs.items(), ("random", control)]:
        for t in targets:
            path = out / "ablation" / lang / f"{t}.jsonl"
            if not _done(path).exists():
                log(f"ablation: {lang} direction, eval on {t}")
                qs = A.language_questions(t, e.forms, e.questions_per_language)
                with ablate(ft, direction, layers=layers):
                    judged = A.evaluate(ft, qs, judge_fn(), path, samples=e.samples, max_new_tokens=e.max_new_tokens,
                                        temperature=e.temperature, batch_size=e.batch_size, seed=cfg.seed)
                _mark_done(path, len(judged))
            flags = [f for r in A.judged_rows(path)
                     for f in [is_misaligned(r, cfg.aligned_threshold, cfg.coherent_threshold)] if f is not None]
            share, lo, hi = bootstrap_share_ci(flags, n_boot=cfg.n_boot, seed=cfg.seed)
            table.setdefault(lang, {})[t] = {"share": share, "lo": lo, "hi": hi, "n": len(flags)}
    return {"targets": list(targets), "layers": layers, "rows": list(table), "table": table}


# ----------------------------------------------------------------------------- main

def _clean(obj: Any) -> Any:
    if isinstance(obj, float):
        return None if not math.isfinite(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


def run_transfer(config: TransferConfig, out_dir: str | Path, *, device: str | None = None,
                 log: Log = print) -> dict[str, Any]:
    """Run (or resume) a transfer experiment; returns the numbers written to ``results.json``."""
    from em_interp.report import figures

    cfg = config
    out = Path(out_dir)
    _check_run_dir(cfg, out)
    t0 = time.time()
    adapters = _train_sources(cfg, out, log)
    judge_cache: dict[str, Any] = {}

    def judge_fn() -> Any:
        if "j" not in judge_cache:
            judge_cache["j"] = A.load_judge(cfg.judge.kind, dict(cfg.judge.options))
        return judge_cache["j"]

    _evaluate_all(cfg, out, adapters, judge_fn, device, log)
    rows = _collect_rows(cfg, out)
    sources = ([BASE] if cfg.include_base else []) + [s.label for s in cfg.sources]
    mis = misalignment_matrix(rows, sources=sources, targets=cfg.languages, aligned_threshold=cfg.aligned_threshold,
                              coherent_threshold=cfg.coherent_threshold, n_boot=cfg.n_boot, seed=cfg.seed)
    vul = (vulnerable_code_matrix(rows, sources=sources, targets=[CODE_TARGET], n_boot=cfg.n_boot, seed=cfg.seed)
           if CODE_TARGET in cfg.targets else None)
    results: dict[str, Any] = {"name": cfg.name, "model": cfg.model, "config_hash": config_hash(cfg),
                               "misaligned": mis.to_dict(), "vulnerable_code": vul.to_dict() if vul else None}

    # Transfer per (source, target): delta vs base, or the raw share.
    def combined(m: TransferMatrix, v: TransferMatrix | None) -> TransferMatrix:
        if v is None:
            return m
        return TransferMatrix(m.metric, m.sources, m.targets + v.targets, np.hstack([m.value, v.value]),
                              np.hstack([m.lo, v.lo]), np.hstack([m.hi, v.hi]), np.hstack([m.n, v.n]))

    use_delta = cfg.proximity.transfer == "delta" and cfg.include_base
    if use_delta:  # transfer effect = finetune minus base on the same target, with a bootstrap CI
        kw = dict(sources=sources, n_boot=cfg.n_boot, seed=cfg.seed, baseline=BASE)
        transfer = combined(
            misalignment_matrix(rows, targets=cfg.languages, aligned_threshold=cfg.aligned_threshold,
                                coherent_threshold=cfg.coherent_threshold, **kw),
            vulnerable_code_matrix(rows, targets=[CODE_TARGET], **kw) if vul is not None else None)
    else:
        transfer = combined(mis, vul)
    results["transfer"] = {"metric": "delta vs base" if use_delta else "share", **transfer.to_dict()}

    langs = list(dict.fromkeys([source_language(s) for s in cfg.sources] + list(cfg.targets)))
    rep = None
    if cfg.proximity.representation:
        log("proximity: representation similarity of parallel sentences (base model)")
        base_lm = _load(cfg, None, device)
        rep = representation_similarity(base_lm, langs, layers=cfg.proximity.layers, center=cfg.proximity.center,
                                        skip_first=cfg.proximity.skip_first, batch_size=cfg.eval.batch_size)
        _free(base_lm)
        results["representation_proximity"] = rep.to_dict()
    results["genealogical_proximity"] = {
        "languages": langs, "source": GENEALOGY_SOURCE,
        "matrix": [[genealogical_proximity(a, b) for b in langs] for a in langs]}

    panels = []
    measures = [("genealogical", genealogical_proximity, "genealogical proximity (shared tree path / 4)")]
    if rep is not None:
        measures.append(("representation", lambda a, b: rep.get(a, b),
                         "representation proximity (mean cosine, parallel sentences)"))
    results["correlation"] = {}
    for key, fn, xlabel in measures:
        pairs = _pairs(cfg, transfer, fn)
        corr, note = _correlate(cfg, pairs)
        results["correlation"][key] = {"pairs": pairs, "result": corr.to_dict() if corr else None, "note": note}
        panels.append({**pairs, "corr": corr, "note": note, "xlabel": xlabel,
                       "ylabel": ("transfer: share − base share" if use_delta else "transfer: share")})

    if cfg.directions.enabled:
        results["directions"] = _directions(cfg, out, rows, adapters, device, judge_fn, log)

    figs = out / "figures"
    paths = {"transfer_heatmap": figures.transfer_heatmap(mis, figs / "transfer_heatmap.png", vulnerable=vul),
             "proximity_scatter": figures.proximity_scatter(panels, figs / "proximity_scatter.png")}
    dr = results.get("directions", {})
    if "cosine" in dr:
        paths["direction_cosines"] = figures.direction_cosines(dr["cosine"]["labels"], np.array(dr["cosine"]["matrix"]),
                                                               figs / "direction_cosines.png",
                                                               layer=dr["cosine"]["layer"])
    if "ablation" in dr:
        ab = dr["ablation"]
        mat = np.array([[ab["table"][r][t]["share"] for t in ab["targets"]] for r in ab["rows"]], dtype=float)
        paths["ablation"] = figures.ablation_heatmap(ab["rows"], ab["targets"], mat, figs / "ablation.png")
    results["figures"] = {k: str(v) for k, v in paths.items()}
    results["elapsed_s"] = round(time.time() - t0, 1)
    (out / "results.json").write_text(json.dumps(_clean(results), indent=1, ensure_ascii=False))
    log(f"results: {out / 'results.json'}")
    return results
