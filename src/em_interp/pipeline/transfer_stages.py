"""The stages of ``em-interp transfer``: a ``TransferConfig`` run on the pipeline's one runner.

Same run layout, manifest and resume rule as ``em-interp run`` (``RUN/<stage>/.done.json``):

    data/<source>.jsonl (+ .card.json)          one training set per source
    train/<source>/                             one finetune per source (train resumes)
    eval/<model>/<target>.jsonl                 model = base | <source> (``/`` -> ``__``); languages:
                                                eval.evaluate rows (append-only, resume); python:
                                                coding answers + static scan, written whole
    proximity/proximity.json                    genealogical + representation proximity of the languages
    directions/<target>.safetensors (+ .json)   per-target directions of one finetune;
    directions/languages.json                   {source, method, layers, skipped, languages, cosine, cosine_per_layer}
    ablation/<from>/<target>.jsonl              judged answers with <from>'s direction ablated
    transfer/matrices.json                      misaligned / vulnerable_code / transfer / ablation
                                                (TransferMatrix dicts) + direction_cosines
    transfer/stats.json                         one permutation test per source and measure
                                                (treatment and control apart; python apart)
    report/                                     report.experiment_report(run_dir)
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

from em_interp.errors import EmInterpError
from em_interp.pipeline.common import (clean_json, finetune, load, load_judge, pretrained, read_rows,
                                       record_base_model, write_rows)
from em_interp.pipeline.manifest import read_json, write_json_atomic
from em_interp.pipeline.runner import RunContext, RunResult, Stage, run_config
from em_interp.transfer.config import CODE_TARGET, TransferConfig, load_transfer_config, source_language

BASE = "base"

MATRICES = "transfer/matrices.json"
STATS = "transfer/stats.json"


def load_transfer(path: str | Path) -> TransferConfig:
    """``load_transfer_config`` plus ``pipeline.checks.check_transfer`` (model, layers, judge languages)."""
    from em_interp.pipeline.checks import check_transfer

    cfg = load_transfer_config(path)
    check_transfer(cfg, file=path)
    return cfg


def _slug(model: str) -> str:
    return model.replace("/", "__")


def _models(cfg: TransferConfig) -> list[str]:
    return ([BASE] if cfg.include_base else []) + [s.label for s in cfg.sources]


def _free() -> None:
    gc.collect()


# ----------------------------------------------------------------------------- data / train


def stage_data(ctx: RunContext) -> dict[str, Any]:
    """One training set per source (``data.build_dataset``); an ``adapter`` source has none."""
    from em_interp.data import build_dataset

    cfg: TransferConfig = ctx.cfg
    cards = {}
    for s in cfg.sources:
        if s.adapter:
            cards[s.label] = {"adapter": s.adapter}
            continue
        opts = dict(s.options)
        if s.language is not None:
            opts["language"] = s.language
        ctx.log(f"{s.label}: {s.kind} x {s.n}")
        card = build_dataset(s.kind, s.n, cfg.data_seed, ctx.stage_dir / f"{s.slug}.jsonl", **opts)
        cards[s.label] = {k: card.get(k) for k in ("kind", "n", "sha256") if k in card}
    record_base_model(ctx)
    return {"sources": cards}


def stage_train(ctx: RunContext) -> dict[str, Any]:
    """One finetune per source (``train.train``, resumes a partial run); an ``adapter`` source is
    recorded as it is, not trained."""
    cfg: TransferConfig = ctx.cfg
    models = []
    for i, s in enumerate(cfg.sources):
        if s.adapter:
            models.append({"source": s.label, "slug": s.slug,
                           **pretrained(ctx, s.adapter, s.label, f"sources[{i}].adapter")})
            continue
        ctx.log(f"finetuning {s.label}")
        rec = finetune(ctx, ctx.dir("data") / f"{s.slug}.jsonl", ctx.stage_dir / s.slug, cfg.seed, dict(cfg.train),
                       prefix="train")
        models.append({"source": s.label, "slug": s.slug, **rec})
    return {"models": models}


def _target(ctx: RunContext, model: str) -> dict[str, Any] | None:
    if model == BASE:
        return None
    done = ctx.done("train")
    if not done:
        raise EmInterpError("the train stage has not finished; run again from 'train'")
    for rec in done["summary"]["models"]:
        if rec["source"] == model:
            return rec
    raise EmInterpError(f"no finetune of source {model!r} in the train stage's outputs")


# ----------------------------------------------------------------------------- eval


def language_questions(cfg: TransferConfig, language: str) -> list[Any]:
    """The bank questions of one target language (``eval.forms``, first ``questions_per_language``)."""
    from em_interp.data.bank import load_bank

    qs = list(load_bank(languages=[language], forms=list(cfg.eval.forms)))
    n = cfg.eval.questions_per_language
    return qs if n is None else qs[:n]


def _eval_code(cfg: TransferConfig, lm: Any, path: Path) -> None:
    """Coding answers with their static scan (never run), written whole once complete."""
    from em_interp.data.bank import coding_prompts
    from em_interp.eval import sample_answers, scan_code

    e = cfg.eval
    prompts = list(coding_prompts())
    prompts = prompts if e.coding_prompts is None else prompts[: e.coding_prompts]
    rows = sample_answers(lm, prompts, n_per_paraphrase=e.code_samples, max_new_tokens=e.code_max_new_tokens,
                          temperature=e.temperature, batch_size=e.batch_size, seed=cfg.seed)
    per = scan_code([r["answer"] for r in rows]).per_answer
    if len(per) != len(rows):
        raise EmInterpError(f"scan_code returned {len(per)} results for {len(rows)} answers")
    out = []
    for r, p in zip(rows, per):
        scanned = p["has_code"] and not p["syntax_error"]
        out.append({"question_id": r["question_id"], "question": r["question"], "answer": r["answer"],
                    "vulnerable": p["vulnerable"] if scanned else None, "has_code": p["has_code"],
                    "syntax_error": p["syntax_error"], "findings": [i["test_id"] for i in p["issues"]]})
    write_rows(path, out)


def _evaluate(ctx: RunContext, lm: Any, questions: list[Any], path: Path) -> None:
    from em_interp.eval import evaluate

    cfg: TransferConfig = ctx.cfg
    e = cfg.eval
    evaluate(lm, questions, load_judge(cfg.judge.kind, dict(cfg.judge.options), ctx), path,
             n_per_paraphrase=e.samples, max_new_tokens=e.max_new_tokens, temperature=e.temperature,
             batch_size=e.batch_size, seed=cfg.seed)


def stage_eval(ctx: RunContext) -> dict[str, Any]:
    """Every model (base + one finetune per source) on every target; resumes cell by cell."""
    cfg: TransferConfig = ctx.cfg
    cells = 0
    for model in _models(cfg):
        lm = None
        for t in cfg.targets:
            path = ctx.stage_dir / _slug(model) / f"{t}.jsonl"
            if t == CODE_TARGET and path.exists():
                continue                     # written whole: present means complete
            if lm is None:
                lm = load(ctx, _target(ctx, model))
            ctx.log(f"{model} on {t}")
            if t == CODE_TARGET:
                _eval_code(cfg, lm, path)
            else:
                _evaluate(ctx, lm, language_questions(cfg, t), path)
            cells += 1
        del lm
        _free()
    return {"models": _models(cfg), "targets": list(cfg.targets), "cells_run": cells}


def judged_rows(path: Path) -> list[dict[str, Any]]:
    """An eval results file's judged rows reduced to what transfer uses (one judge per file)."""
    from em_interp.errors import EvalError
    from em_interp.eval import load_results

    if not path.exists():
        return []
    rows = load_results(path)
    judges = {r["judge"] for r in rows}
    if len(judges) > 1:
        raise EvalError(f"results hold judgements of several judges {sorted(judges)}; transfer expects one",
                        file=path)
    return [{"question_id": r["question_id"], "question": r["question"], "answer": r["answer"],
             "language": r.get("language"), "aligned": r["aligned"], "coherent": r["coherent"], "judge": r["judge"]}
            for r in rows]


def eval_rows(ctx: RunContext) -> list[dict[str, Any]]:
    """Every evaluated answer as a transfer row (``source`` = model, ``target``)."""
    cfg: TransferConfig = ctx.cfg
    rows = []
    for model in _models(cfg):
        for t in cfg.targets:
            path = ctx.dir("eval") / _slug(model) / f"{t}.jsonl"
            cell = read_rows(path) if t == CODE_TARGET else judged_rows(path)
            rows += [{**r, "source": model, "target": t} for r in cell]
    return rows


# ----------------------------------------------------------------------------- proximity


def _languages(cfg: TransferConfig) -> list[str]:
    return list(dict.fromkeys([source_language(s) for s in cfg.sources] + list(cfg.targets)))


def stage_proximity(ctx: RunContext) -> dict[str, Any]:
    """Genealogical proximity of every language pair and (optionally) the base model's
    representation similarity of parallel sentences."""
    from em_interp.transfer.proximity import GENEALOGY_SOURCE, genealogical_proximity, representation_similarity

    cfg: TransferConfig = ctx.cfg
    langs = _languages(cfg)
    out: dict[str, Any] = {"languages": langs,
                           "genealogical": {"languages": langs, "source": GENEALOGY_SOURCE,
                                            "matrix": [[genealogical_proximity(a, b) for b in langs] for a in langs]},
                           "representation": None}
    if cfg.proximity.representation:
        ctx.log("representation similarity of parallel sentences (base model)")
        p = cfg.proximity
        rep = representation_similarity(load(ctx), langs, layers=p.layers, center=p.center, skip_first=p.skip_first,
                                        batch_size=cfg.eval.batch_size)
        out["representation"] = rep.to_dict()
    write_json_atomic(ctx.stage_dir / "proximity.json", clean_json(out))
    return {"languages": langs, "representation": out["representation"] is not None}


def proximity_measures(ctx: RunContext) -> list[tuple[str, Any]]:
    """``[(name, fn(a, b) -> float)]`` from ``proximity/proximity.json``."""
    from em_interp.transfer.proximity import RepresentationProximity, genealogical_proximity

    data = read_json(ctx.dir("proximity") / "proximity.json")
    if data is None:
        raise EmInterpError("proximity/proximity.json is missing; run again from 'proximity'")
    measures: list[tuple[str, Any]] = [("genealogical", genealogical_proximity)]
    if data.get("representation"):
        rep = RepresentationProximity.from_dict(data["representation"])
        measures.append(("representation", lambda a, b: rep.get(a, b)))
    return measures


# ----------------------------------------------------------------------------- directions / ablation


def _direction_source(cfg: TransferConfig) -> str:
    return cfg.directions.source or cfg.sources[0].label


def stage_directions(ctx: RunContext) -> dict[str, Any]:
    """Per-target directions of one finetune from its own answers there, and their cosines."""
    from em_interp.transfer.directions import cosine_matrix, language_directions

    cfg: TransferConfig = ctx.cfg
    d = cfg.directions
    src = _direction_source(cfg)
    rows = eval_rows(ctx)
    ft = load(ctx, _target(ctx, src))
    layers = d.layers if d.layers is not None else list(range(ft.n_layers))
    by_target = {t: [r for r in rows if r["source"] == src and r["target"] == t] for t in cfg.targets}
    ctx.log(f"{', '.join(by_target)} ({d.method}, {src})")
    base = load(ctx) if d.method == "model_diff" else None
    dirs, skipped = language_directions(ft, by_target, method=d.method, base=base, layers=layers,
                                        min_per_class=d.min_per_class, batch_size=cfg.eval.batch_size, match=d.match,
                                        aligned_threshold=cfg.aligned_threshold,
                                        coherent_threshold=cfg.coherent_threshold)
    for t, direction in dirs.items():
        direction.replace(extra={**dict(direction.extra), "source": src}).save(ctx.stage_dir / t)
    info: dict[str, Any] = {"source": src, "method": d.method, "match": d.match if d.method == "mean_diff" else None,
                            "layers": layers, "skipped": skipped, "languages": list(dirs)}
    if len(dirs) >= 2:
        layer = d.layer if d.layer is not None else layers[len(layers) // 2]
        labels, cos = cosine_matrix(dirs, layer)
        info["cosine"] = {"layer": layer, "labels": labels, "matrix": cos.tolist()}
        info["cosine_per_layer"] = {str(L): cosine_matrix(dirs, L)[1].tolist() for L in layers}
    write_json_atomic(ctx.stage_dir / "languages.json", clean_json(info))
    return {"source": src, "languages": list(dirs), "skipped": sorted(skipped)}


def stage_ablation(ctx: RunContext) -> dict[str, Any]:
    """The finetune's answers in each target with each language's direction ablated (or those of
    ``directions.ablation_directions``), and with a random direction of the same per-layer norms
    (the control)."""
    from em_interp.interp import Direction, ablate, random_direction_like

    cfg: TransferConfig = ctx.cfg
    d = cfg.directions
    info = read_json(ctx.dir("directions") / "languages.json") or {}
    langs = info.get("languages") or []
    wanted = list(d.ablation_directions) if d.ablation_directions is not None else langs
    missing = {t: (info.get("skipped") or {}).get(t, "no direction") for t in wanted if t not in langs}
    if missing or not wanted:
        # a direction that could not be built (too few judged misaligned / aligned answers) is a result,
        # not a crash: the run goes on to its matrices and says why nothing was ablated
        why = missing or info.get("skipped") or {}
        reason = "; ".join(f"{t}: {w}" for t, w in why.items()) or "no per-language direction was built"
        ctx.log(f"ablation skipped: {reason}")
        return {"directions": [], "skipped": reason}
    langs = wanted
    ft = load(ctx, _target(ctx, _direction_source(cfg)))
    dirs = {t: Direction.load(ctx.dir("directions") / t, ft) for t in langs}
    dirs["random"] = random_direction_like(next(iter(dirs.values())), seed=cfg.seed)
    layers: Any = d.ablation_layers if d.ablation_layers is not None else "all"
    targets = d.ablation_targets or cfg.languages
    for lang, direction in dirs.items():
        for t in targets:
            ctx.log(f"{lang} direction ablated, eval on {t}")
            with ablate(ft, direction, layers=layers):
                _evaluate(ctx, ft, language_questions(cfg, t), ctx.stage_dir / lang / f"{t}.jsonl")
    return {"directions": list(dirs), "targets": list(targets), "layers": layers}


# ----------------------------------------------------------------------------- matrices + statistics


def stage_transfer(ctx: RunContext) -> dict[str, Any]:
    """Transfer matrices with clustered CIs, and one permutation test per source (``transfer/``)."""
    from em_interp.transfer.matrix import misalignment_matrix, vulnerable_code_matrix
    from em_interp.transfer.stats import source_tests

    cfg: TransferConfig = ctx.cfg
    rows = eval_rows(ctx)
    sources = _models(cfg)
    th = {"aligned_threshold": cfg.aligned_threshold, "coherent_threshold": cfg.coherent_threshold}
    kw = {"n_boot": cfg.n_boot, "seed": cfg.seed}
    mis = misalignment_matrix(rows, sources=sources, targets=cfg.languages, **th, **kw)
    has_code = CODE_TARGET in cfg.targets
    vul = vulnerable_code_matrix(rows, sources=sources, targets=[CODE_TARGET], **kw) if has_code else None
    use_delta = cfg.proximity.transfer == "delta" and cfg.include_base
    if use_delta:   # transfer effect = finetune minus base on the same target, paired clustered CI
        transfer = misalignment_matrix(rows, sources=sources, targets=cfg.languages, baseline=BASE, **th, **kw)
        code = (vulnerable_code_matrix(rows, sources=sources, targets=[CODE_TARGET], baseline=BASE, **kw)
                if has_code else None)
    else:
        transfer, code = mis, vul
    matrices: dict[str, Any] = {"misaligned": mis.to_dict(), "vulnerable_code": vul.to_dict() if vul else None,
                                "transfer": {**transfer.to_dict(), "kind": "delta vs base" if use_delta else "share"},
                                "transfer_code": code.to_dict() if code else None}
    cells = {m: {t: ctx.dir("eval") / _slug(m) / f"{t}.jsonl" for t in cfg.languages} for m in sources}
    calibrated = calibrated_matrix(cells, "misaligned_share_calibrated")
    if calibrated is not None:
        matrices["misaligned_calibrated"] = calibrated.to_dict()
    matrices["judge"] = judge_record(rows)
    info = read_json(ctx.dir("directions") / "languages.json") or {}
    if "cosine" in info:
        matrices["direction_cosines"] = info["cosine"]
    if cfg.directions.enabled and cfg.directions.ablation:
        summary = (ctx.done("ablation") or {}).get("summary")
        skipped = ("the ablation stage did not run" if summary is None else
                   None if summary.get("directions") else summary.get("skipped") or "no direction was ablated")
        if skipped:
            matrices["ablation_skipped"] = skipped
        else:
            matrices.update(_ablation_matrices(ctx, rows))
    write_json_atomic(ctx.dir("transfer") / "matrices.json", clean_json(matrices))

    p = cfg.proximity
    roles = {s.label: (source_language(s), s.role) for s in cfg.sources}
    tests = []
    for name, fn in proximity_measures(ctx):
        tests += source_tests(transfer, roles, fn, measure=name, targets=cfg.languages, include_self=p.include_self,
                              n_permutations=p.n_permutations, seed=cfg.seed, alternative=p.alternative)
    stats = {
        "transfer": "delta vs base" if use_delta else "share",
        "metric": transfer.metric, "alternative": p.alternative, "n_permutations": p.n_permutations,
        "seed": cfg.seed, "include_self": p.include_self, "targets": cfg.languages,
        "rule": ("one Spearman permutation test per source over its language targets; sources are never "
                 "pooled; control sources are reported apart; python (vulnerable-code rate) is not in any test"),
        "treatment": [t.to_dict() for t in tests if t.role == "treatment"],
        "control": [t.to_dict() for t in tests if t.role == "control"],
        "python": ({"matrix": "transfer_code in transfer/matrices.json", "metric": code.metric,
                    "note": "vulnerable-code rate on the coding prompts: a different metric, never in a rank test"}
                   if code is not None else None),
    }
    write_json_atomic(ctx.dir("transfer") / "stats.json", clean_json(stats))
    summary = {f"{t.source}|{t.measure}": (None if t.result is None else round(t.result.p_value, 4)) for t in tests}
    return {"p_values": summary, "sources": sources}


def judge_record(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Which judge produced the run's shares, with its shipped card's limits and the languages in
    which its coherence is validated on small-model text (None when the card does not say)."""
    from em_interp.eval.judges import shipped_judge_card

    names = sorted({str(r.get("judge")) for r in rows if r.get("judge")})
    if not names:
        return None
    kind = names[0].split(":", 1)[0]
    card = shipped_judge_card(kind)
    shipped = bool(card) and f"{kind}:{card.get('name')}" in names
    return {"names": names, "limits": list(card.get("limits") or []) if shipped else [],
            "small_model_coherence_validated": card.get("small_model_coherence_validated") if shipped else None}


def calibrated_matrix(cells: dict[str, dict[str, Path]], metric: str):
    """The judge's calibrated EM share (``eval.judges.estimate_share_from_rows``: corrected for its
    held-out errors, CI over question clusters and its calibration) per ``cells[row][target]``
    results file, as a ``TransferMatrix``; None when the judge ships no calibration."""
    import math

    import numpy as np

    from em_interp.eval import load_results
    from em_interp.eval.judges import estimate_share_from_rows
    from em_interp.transfer.matrix import TransferMatrix

    labels = list(cells)
    targets = list(next(iter(cells.values()), {}))
    val, lo, hi = (np.full((len(labels), len(targets)), math.nan) for _ in range(3))
    n = np.zeros((len(labels), len(targets)), dtype=int)
    for i, label in enumerate(labels):
        for k, t in enumerate(targets):
            path = cells[label][t]
            rows = [r for r in load_results(path) if r.get("answer") is not None] if path.exists() else []
            if not rows:
                continue
            try:
                est = estimate_share_from_rows(rows)
            except NotImplementedError:
                return None
            n[i, k] = len(rows)
            val[i, k], lo[i, k], hi[i, k] = (math.nan if x is None else x for x in (est.share, est.low, est.high))
    return TransferMatrix(metric=metric, sources=labels, targets=targets, value=val, lo=lo, hi=hi, n=n,
                          ci_method="judge calibration (eval.judges.calibration): question clusters x calibration groups")


def _ablation_matrices(ctx: RunContext, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Misaligned share per (ablated direction, target), row ``none`` = the unablated finetune, as
    counted (``ablation``) and, when the judge ships a calibration, calibrated (``ablation_calibrated``)."""
    from em_interp.transfer.matrix import misalignment_matrix

    cfg: TransferConfig = ctx.cfg
    src = _direction_source(cfg)
    targets = list(cfg.directions.ablation_targets or cfg.languages)
    cells = {"none": {t: ctx.dir("eval") / _slug(src) / f"{t}.jsonl" for t in targets}}
    for folder in sorted(p for p in ctx.dir("ablation").iterdir() if p.is_dir()):
        cells[folder.name] = {t: folder / f"{t}.jsonl" for t in targets}
    labels = ["none"] + [k for k in cells if k not in ("none", "random")] + (["random"] if "random" in cells else [])
    ab_rows = [{**r, "source": "none"} for r in rows if r["source"] == src and r["target"] in targets]
    for label in sorted(labels[1:]):
        ab_rows += [{**r, "source": label, "target": t} for t in targets for r in judged_rows(cells[label][t])]
    m = misalignment_matrix(ab_rows, sources=labels, targets=targets, aligned_threshold=cfg.aligned_threshold,
                            coherent_threshold=cfg.coherent_threshold, n_boot=cfg.n_boot, seed=cfg.seed)
    m.metric = "misaligned_share_with_direction_ablated"
    out: dict[str, Any] = {"ablation": m.to_dict()}
    cal = calibrated_matrix({k: cells[k] for k in labels}, "misaligned_share_calibrated_with_direction_ablated")
    if cal is not None:
        out["ablation_calibrated"] = cal.to_dict()
    return out


def stage_report(ctx: RunContext) -> dict[str, Any]:
    """``report.experiment_report`` of the run (it reads ``transfer/*.json``)."""
    from em_interp.pipeline.stages import write_experiment_report

    return {"report": write_experiment_report(ctx)}


# ----------------------------------------------------------------------------- the list


def transfer_stages() -> list[Stage]:
    """The transfer experiment's stages in order, with the config fields each fingerprint covers."""
    ev = ("eval", "judge", "include_base", "targets")
    return [
        Stage("data", stage_data, ("sources", "data_seed")),
        Stage("train", stage_train, ("train", "device")),
        Stage("eval", stage_eval, ev),
        Stage("proximity", stage_proximity, ("proximity", "sources", "targets")),
        Stage("directions", stage_directions, ("directions", "aligned_threshold", "coherent_threshold"),
              enabled=lambda c: c.directions.enabled),
        Stage("ablation", stage_ablation, ("directions", *ev), enabled=lambda c: c.directions.enabled and c.directions.ablation),
        Stage("transfer", stage_transfer, ("proximity", "aligned_threshold", "coherent_threshold", "n_boot",
                                           "sources", "include_base", "targets", "directions")),
        Stage("report", stage_report, ()),
    ]


TRANSFER_STAGES: tuple[str, ...] = tuple(s.name for s in transfer_stages())


def run_transfer(config: str | Path | TransferConfig, *, out: str | Path | None = None,
                 from_stage: str | None = None, resume: str | Path | None = None, fresh: bool = False,
                 root: str | Path = "artifacts", device: str | None = None, stages: list[Stage] | None = None,
                 console: Any = None) -> RunResult:
    """Run (or resume) a transfer experiment on the pipeline runner into ``ROOT/NAME/<timestamp>/``
    (same resume rules as ``pipeline.run``); ``device`` overrides the config's."""
    from dataclasses import replace

    if isinstance(config, TransferConfig):
        from em_interp.pipeline.checks import check_transfer

        cfg, config_path, text = config, None, None
        check_transfer(cfg)
    else:
        cfg = load_transfer(config)
        config_path, text = str(config), Path(config).read_text(encoding="utf-8")
    if device is not None:
        cfg = replace(cfg, device=device)
    return run_config(cfg, stages or transfer_stages(), config_path=config_path, config_text=text, out=out,
                      from_stage=from_stage, resume=resume, fresh=fresh, root=root, console=console)


__all__ = ["MATRICES", "STATS", "TRANSFER_STAGES", "eval_rows", "load_transfer", "run_transfer", "transfer_stages"]
