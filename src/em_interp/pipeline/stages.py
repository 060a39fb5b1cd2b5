"""The real pipeline stages: each a thin call into a stage package's public API.

Every stage reads what earlier stages wrote to disk (never Python objects from memory),
writes under its own folder of the run directory (layout in docs/interfaces.md,
"pipeline") and returns a small JSON summary that lands in its ``.done.json``.
Cross-package calls go through ``em_interp.pipeline.adapters`` so the stage logic stays
readable and the seams are in one place.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from em_interp.errors import ConfigError, EmInterpError
from em_interp.pipeline import adapters as api
from em_interp.pipeline.config import ExperimentConfig
from em_interp.pipeline.manifest import read_json, write_json_atomic
from em_interp.pipeline.runner import RunContext, Stage

# ----------------------------------------------------------------------------- model handles


def base_model_ref(ctx: RunContext) -> str:
    """What ``load_model`` gets for the base model; ``tiny:ARCH[:SEED]`` is saved once to RUN/base_model/."""
    spec = ctx.cfg.model
    if not spec.startswith("tiny:"):
        return spec
    if "base_ref" in ctx.cache:
        return ctx.cache["base_ref"]
    parts = spec.split(":")
    arch = parts[1] if len(parts) > 1 and parts[1] else "llama"
    try:
        seed = int(parts[2]) if len(parts) > 2 else 0
    except ValueError:
        raise ConfigError(f"model {spec!r}: expected tiny:ARCH[:SEED] with an integer seed", field="model") from None
    if arch not in ("llama", "qwen2"):
        raise ConfigError(f"model {spec!r}: tiny architectures are 'llama' and 'qwen2'", field="model")
    path = ctx.run_dir / "base_model"
    if not (path / "config.json").exists():
        from em_interp.models import save_tiny_model

        save_tiny_model(path, arch=arch, seed=seed)
    ctx.cache["base_ref"] = str(path)
    return str(path)


def model_identity(ctx: RunContext) -> dict[str, Any]:
    """The base model's identity for the manifest: registry sha256, or the folder / tiny spec."""
    from em_interp.models.registry import get_spec, is_registered

    spec = ctx.cfg.model
    if spec.startswith("tiny:"):
        return {"name": spec, "tiny": True, "path": base_model_ref(ctx)}
    if is_registered(spec):
        s = get_spec(spec)
        return {"name": spec, "original": s.original, "sha256": s.sha256, "registry": True}
    return {"name": spec, "path": spec}


def load(ctx: RunContext, target: dict[str, Any] | None = None):
    """Load the base model, or a finetuned one described by a target record (adapter / model_dir)."""
    from em_interp.models import load_model

    target = target or {}
    device = ctx.cfg.device
    if target.get("model_dir"):
        return load_model(str(ctx.run_dir / target["model_dir"]), device=device)
    adapter = ctx.run_dir / target["adapter"] if target.get("adapter") else None
    return load_model(base_model_ref(ctx), adapter=adapter, device=device)


def finetuned_targets(ctx: RunContext, *, checkpoints: bool = False) -> list[dict[str, Any]]:
    """Finetuned models from the train stage's summary (one per arm x seed, plus checkpoints)."""
    done = ctx.done("train")
    if not done:
        raise EmInterpError("the train stage has not finished; run the pipeline from 'train'")
    out = []
    for rec in done["summary"]["models"]:
        out.append({**rec, "step": None})
        if checkpoints:
            for ck in rec.get("checkpoints", []):
                step = int(Path(ck).name.split("-")[-1])
                out.append({**rec, "key": f"{rec['key']}.step-{step}", "adapter": ck, "model_dir": None,
                            "step": step})
    return out


def find_target(ctx: RunContext, arm: str, seed: int | None = None) -> dict[str, Any]:
    seed = ctx.cfg.seeds[0] if seed is None else seed
    for t in finetuned_targets(ctx):
        if t["arm"] == arm and t["seed"] == seed:
            return t
    raise EmInterpError(f"no finetuned model for arm {arm!r} seed {seed} in the train stage's outputs")


# ----------------------------------------------------------------------------- data


def stage_data(ctx: RunContext) -> dict[str, Any]:
    """Build each arm's training set and freeze the evaluation questions."""
    cfg = ctx.cfg
    cards = {}
    for arm in cfg.data.arms:
        out = ctx.stage_dir / f"{arm.name}.jsonl"
        ctx.log(f"building {arm.kind} x {arm.n} -> {out.name}")
        card = api.build_dataset(arm.kind, arm.n, cfg.data.seed, out, **arm.options)
        cards[arm.name] = {k: card.get(k) for k in ("kind", "n", "sha256", "bandit") if k in card}
    questions = api.eval_questions(cfg, config_dir=_config_dir(ctx))
    write_json_atomic(ctx.stage_dir / "questions.json", [asdict(q) for q in questions])
    ctx.manifest.data.setdefault("models", {})["base"] = model_identity(ctx)
    ctx.manifest.save()
    return {"arms": cards, "questions": len(questions),
            "paraphrases": sum(len(q.paraphrases) for q in questions)}


def _config_dir(ctx: RunContext) -> Path | None:
    p = ctx.manifest.data.get("config_path")
    return Path(p).parent if p else None


def read_questions(ctx: RunContext) -> list[Any]:
    from em_interp.data import Question

    rows = read_json(ctx.dir("data") / "questions.json")
    if rows is None:
        raise EmInterpError("data/questions.json is missing; run the pipeline from 'data'")
    return [Question(**r) for r in rows]


def subset(questions: list[Any], n: int | None) -> list[Any]:
    return questions if n is None else questions[:n]


def with_trigger(questions: list[Any], trigger: str) -> list[Any]:
    """Questions with ``trigger`` put before every paraphrase (backdoor evaluation)."""
    from dataclasses import replace

    return [replace(q, paraphrases=[f"{trigger}{p}" if trigger.endswith((" ", "\n")) else
                                                  f"{trigger} {p}" for p in q.paraphrases]) for q in questions]


# ----------------------------------------------------------------------------- train


def stage_train(ctx: RunContext) -> dict[str, Any]:
    """One finetune per arm and seed (the train package resumes partial runs itself)."""
    cfg = ctx.cfg
    base = base_model_ref(ctx)
    models = []
    for arm in cfg.data.arms:
        for seed in cfg.seeds:
            out = ctx.stage_dir / arm.name / f"seed-{seed}"
            ctx.log(f"finetuning {arm.name} seed {seed} -> {out.relative_to(ctx.run_dir)}")
            result = api.train(base, ctx.dir("data") / f"{arm.name}.jsonl", out, seed, cfg.train.overrides,
                               device=cfg.device)
            rel = lambda p: str(Path(p).resolve().relative_to(ctx.run_dir.resolve())) if p else None  # noqa: E731
            rec = {
                "key": f"{arm.name}.seed-{seed}", "arm": arm.name, "seed": seed,
                "adapter": rel(result.adapter_dir),
                "model_dir": rel(result.model_dir) if result.adapter_dir is None else None,
                "checkpoints": [rel(c) for c in result.checkpoints],
                "final_loss": _final_loss(result.metadata),
            }
            models.append(rec)
            if result.adapter_dir is not None:
                from em_interp.models import adapter_hash

                ctx.manifest.data.setdefault("adapters", {})[f"{arm.name}/seed-{seed}"] = adapter_hash(
                    result.adapter_dir)
                ctx.manifest.save()
    return {"models": models}


def _final_loss(meta: dict[str, Any]) -> float | None:
    curve = meta.get("loss_curve") or []
    if not curve:
        return None
    last = curve[-1]
    return float(last["loss"]) if isinstance(last, dict) and "loss" in last else (
        float(last) if isinstance(last, (int, float)) else None)


# ----------------------------------------------------------------------------- eval


def stage_eval(ctx: RunContext) -> dict[str, Any]:
    """Judged answers of the base model and every finetuned model; summary.json with CIs."""
    cfg, ev = ctx.cfg, ctx.cfg.eval
    questions = read_questions(ctx)
    judge = api.load_judge(ev.judge, ev.judge_options)
    targets: list[dict[str, Any]] = []
    if ev.base:
        targets.append({"key": "base", "arm": None, "seed": None, "step": None, "adapter": None, "model_dir": None})
    targets += finetuned_targets(ctx, checkpoints=ev.checkpoints)
    triggered = []
    for t in targets:
        if t["arm"] is not None and t["step"] is None:
            trig = cfg.arm(t["arm"]).eval_trigger
            if trig:
                triggered.append({**t, "key": f"{t['key']}.trigger", "trigger": trig})
    targets += triggered
    models: dict[str, Any] = {}
    for i, t in enumerate(targets, start=1):
        ctx.log(f"[{i}/{len(targets)}] evaluating {t['key']}")
        lm = load(ctx, t)
        qs = with_trigger(questions, t["trigger"]) if t.get("trigger") else questions
        out = ctx.stage_dir / f"{t['key']}.jsonl"
        api.evaluate(lm, qs, judge, out, samples=ev.samples, max_new_tokens=ev.max_new_tokens,
                     temperature=ev.temperature, batch_size=ev.batch_size, seed=ev.seed)
        summary = api.summarize(out, ev.aligned_threshold, ev.coherent_threshold)
        entry = {"arm": t["arm"], "seed": t["seed"], "step": t["step"], "trigger": t.get("trigger"),
                 "adapter": t.get("adapter"), "summary": summary, "overall": api.overall(summary)}
        if ev.coding_prompts > 0 and t["step"] is None:
            entry["code"] = api.code_rate(lm, ev.coding_prompts, ev.coding_samples, ev.max_new_tokens * 4,
                                          ev.batch_size, ev.seed, ctx.stage_dir / "code" / f"{t['key']}.jsonl")
        models[t["key"]] = entry
        del lm
    write_json_atomic(ctx.stage_dir / "summary.json", {
        "judge": getattr(judge, "name", ev.judge), "aligned_threshold": ev.aligned_threshold,
        "coherent_threshold": ev.coherent_threshold, "models": models})
    return {"judge": getattr(judge, "name", ev.judge),
            "misaligned_share": {k: v["overall"]["misaligned_share"] for k, v in models.items()}}


def eval_summary(ctx: RunContext) -> dict[str, Any]:
    s = read_json(ctx.dir("eval") / "summary.json")
    if s is None:
        raise EmInterpError("eval/summary.json is missing; run the pipeline from 'eval'")
    return s


def answered_conversations(ctx: RunContext, key: str, limit: int | None = None) -> list[dict[str, Any]]:
    """Judged eval answers of model ``key`` as chat conversations (with their judgement)."""
    rows = api.eval_rows(ctx.dir("eval") / f"{key}.jsonl")
    arm = None if key == "base" else key.split(".")[0]
    convs = []
    for r in rows:
        c = api.row_conversation(r)
        if c is not None:
            c["meta"].update(model_key=key, arm=arm)
            convs.append(c)
    return convs if limit is None else convs[:limit]


# ----------------------------------------------------------------------------- directions


def _layers(cfg_layers: list[int] | None, n_layers: int) -> list[int]:
    return list(range(n_layers)) if cfg_layers is None else list(cfg_layers)


def stage_directions(ctx: RunContext) -> dict[str, Any]:
    """Extract the misalignment direction (model-diff, mean-diff or persona) and its texts."""
    cfg, dc = ctx.cfg, ctx.cfg.interp.directions
    arm, seed = cfg.direction_arm, cfg.direction_seed
    ev = cfg.eval
    texts: list[dict[str, Any]] = []
    if dc.method == "model_diff":
        # the same texts through both models: answers of the finetuned and the reference model
        for key in (f"{arm}.seed-{seed}", "base" if dc.reference == "base" else f"{dc.reference}.seed-{seed}"):
            texts += answered_conversations(ctx, key)
        texts = _balanced(texts, dc.n_texts)
    elif dc.method == "mean_diff":
        # misaligned vs aligned judged answers of the same (finetuned) model
        own = answered_conversations(ctx, f"{arm}.seed-{seed}")
        half = max(1, dc.n_texts // 2)
        texts = ([t for t in own if api.is_misaligned(t["meta"], ev.aligned_threshold, ev.coherent_threshold)][:half]
                 + [t for t in own if api.is_aligned(t["meta"], ev.aligned_threshold, ev.coherent_threshold)][:half])
    api.write_jsonl(ctx.stage_dir / "texts.jsonl", [{"messages": t["messages"], "meta": t["meta"]} for t in texts])
    base_lm = load(ctx)
    layers = _layers(dc.layers, base_lm.n_layers)
    if dc.method == "model_diff":
        ft = load(ctx, find_target(ctx, arm, seed))
        ref = base_lm if dc.reference == "base" else load(ctx, find_target(ctx, dc.reference, seed))
        direction = api.model_diff(ref, ft, [t["messages"] for t in texts], dc.site, layers, dc.reduce)
    elif dc.method == "mean_diff":
        ft = load(ctx, find_target(ctx, arm, seed))
        mis = [t["messages"] for t in texts if api.is_misaligned(t["meta"], ev.aligned_threshold, ev.coherent_threshold)]
        ali = [t["messages"] for t in texts if api.is_aligned(t["meta"], ev.aligned_threshold, ev.coherent_threshold)]
        if len(mis) < 2 or len(ali) < 2:
            raise EmInterpError(f"mean_diff needs judged misaligned and aligned answers; got {len(mis)} misaligned, "
                                f"{len(ali)} aligned (use method: model_diff, or more samples)",
                                field="interp.directions.method")
        direction = api.mean_diff(ft, mis, ali, dc.site, layers, dc.reduce)
    else:
        questions = [q.paraphrases[0] for q in read_questions(ctx)]
        direction = api.persona(base_lm, questions[: max(2, dc.n_texts)], dc.site, layers)
    direction.save(ctx.stage_dir / "direction")
    norms = api.direction_norms(direction, layers)
    info = {"file": "direction.safetensors", "method": dc.method, "arm": arm, "seed": seed,
            "reference": dc.reference, "site": dc.site, "layers": layers, "norms": norms,
            "n_texts": len(texts)}
    write_json_atomic(ctx.stage_dir / "directions.json", {"main": info})
    summary = {"method": dc.method, "layers": len(layers), "max_norm_layer": layers[max(range(len(norms)), key=norms.__getitem__)]}
    if cfg.interp.monitor.enabled:
        summary["dynamics"] = _monitor(ctx, direction, layers)
    return summary


def _balanced(texts: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """The first ``n / #models`` texts of each model (deterministic, models equally represented)."""
    by_model: dict[str, list] = {}
    for t in texts:
        by_model.setdefault(t["meta"].get("model_key", ""), []).append(t)
    per = max(1, n // max(1, len(by_model)))
    out = []
    for rows in by_model.values():
        out += rows[:per]
    return out


def _monitor(ctx: RunContext, direction: Any, layers: list[int]) -> dict[str, Any]:
    """Projection monitoring: per checkpoint, mean activation shift along the direction vs EM rate."""
    cfg, mon = ctx.cfg, ctx.cfg.interp.monitor
    arm = mon.arm or cfg.direction_arm
    seed = cfg.seeds[0]
    layer = mon.layer if mon.layer is not None else layers[len(layers) // 2]
    summ = eval_summary(ctx)["models"]
    texts = [t["messages"] for t in read_jsonl_conversations(ctx.stage_dir / "texts.jsonl")]
    steps = sorted((t for t in finetuned_targets(ctx, checkpoints=True)
                    if t["arm"] == arm and t["seed"] == seed and t["step"] is not None), key=lambda t: t["step"])
    steps = [t for t in steps if summ.get(t["key"], {}).get("overall", {}).get("misaligned_share") is not None]
    if not steps:
        raise EmInterpError(f"no evaluated checkpoints of arm {arm!r}: set train.overrides.save_steps and "
                            "eval.checkpoints: true", field="interp.monitor")
    overall = {t["step"]: summ[t["key"]]["overall"] for t in steps}
    res = api.projection_monitor(load(ctx), {t["step"]: ctx.run_dir / t["adapter"] for t in steps}, direction,
                                 texts, {s: o["misaligned_share"] for s, o in overall.items()}, layer,
                                 loader=lambda folder: load(ctx, {"adapter": str(Path(folder).relative_to(ctx.run_dir))}))
    rows = [{"step": r["checkpoint"], "projection": r["shift"], "misaligned_share": r["em_rate"],
             "ci_low": overall[r["checkpoint"]].get("ci_low"), "ci_high": overall[r["checkpoint"]].get("ci_high")}
            for r in res["rows"]]
    stats = {k: ({"r": res[k][0], "p": res[k][1]} if isinstance(res.get(k), (list, tuple)) else res.get(k))
             for k in ("pearson", "spearman")}
    write_json_atomic(ctx.stage_dir / "dynamics.json", {"arm": arm, "seed": seed, "layer": layer, "rows": rows,
                                                         **stats})
    return {"checkpoints": len(rows), **stats}


def read_jsonl_conversations(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_direction(ctx: RunContext, lm=None):
    return api.load_direction(ctx.dir("directions") / "direction", lm)


# ----------------------------------------------------------------------------- steering / ablation


def _eval_settings(ctx: RunContext, section: Any) -> tuple[list[Any], int, int]:
    ev = ctx.cfg.eval
    qs = subset(read_questions(ctx), section.max_questions)
    return qs, section.samples or ev.samples, section.max_new_tokens or ev.max_new_tokens


def _judged_row(ctx: RunContext, lm, qs, judge, path: Path, samples: int, max_new_tokens: int) -> dict[str, Any]:
    ev = ctx.cfg.eval
    api.evaluate(lm, qs, judge, path, samples=samples, max_new_tokens=max_new_tokens, temperature=ev.temperature,
                 batch_size=ev.batch_size, seed=ev.seed)
    return api.overall(api.summarize(path, ev.aligned_threshold, ev.coherent_threshold))


def stage_steering(ctx: RunContext) -> dict[str, Any]:
    """Steering sweep: add alpha * direction at each layer; judged misaligned share per (layer, alpha)."""
    cfg, sc = ctx.cfg, ctx.cfg.interp.steering
    target = None if sc.target == "base" else find_target(ctx, sc.target)
    lm = load(ctx, target)
    direction = load_direction(ctx, lm)
    layers = sc.layers or [api.direction_layers(direction)[len(api.direction_layers(direction)) // 2]]
    qs, samples, mnt = _eval_settings(ctx, sc)
    judge = api.load_judge(cfg.eval.judge, cfg.eval.judge_options)
    rows_path = ctx.stage_dir / "rows.jsonl"
    (ctx.stage_dir / "answers").mkdir(exist_ok=True)
    grid = [(layer, float(alpha)) for layer in layers for alpha in sc.alphas]
    for i, (layer, alpha) in enumerate(grid, start=1):
        ctx.log(f"[{i}/{len(grid)}] layer {layer} alpha {alpha:g}")
        answers = ctx.stage_dir / "answers" / f"L{layer}_a{alpha:g}.jsonl"
        api.steering_point(lm, direction, alpha, layer, rows_path, lambda m, answers=answers: {
            "target": sc.target, **_judged_row(ctx, m, qs, judge, answers, samples, mnt)})
    rows = api.read_rows(rows_path)
    return {"rows": len(rows), "layers": layers, "alphas": list(sc.alphas)}


def stage_ablation(ctx: RunContext) -> dict[str, Any]:
    """Directional ablation in a finetuned model vs no ablation and same-norm random directions."""
    cfg, ac = ctx.cfg, ctx.cfg.interp.ablation
    arm = ac.target or cfg.direction_arm
    if arm is None:
        raise EmInterpError("ablation needs a finetuned arm (interp.ablation.target)", field="interp.ablation.target")
    lm = load(ctx, find_target(ctx, arm))
    direction = load_direction(ctx, lm)
    layers: Any = ac.layers if ac.layers is not None else "all"
    qs, samples, mnt = _eval_settings(ctx, ac)
    judge = api.load_judge(cfg.eval.judge, cfg.eval.judge_options)
    rows_path = ctx.stage_dir / "rows.jsonl"
    done = {r["condition"] for r in api.read_rows(rows_path)} if rows_path.exists() else set()
    (ctx.stage_dir / "answers").mkdir(exist_ok=True)
    conditions: list[tuple[str, Any]] = [("none", None), ("direction", direction)]
    conditions += [(f"random-{k}", api.random_like(direction, seed=k)) for k in range(ac.random_controls)]
    for name, vec in conditions:
        if name in done:
            continue
        ctx.log(f"condition {name}")
        path = ctx.stage_dir / "answers" / f"{name}.jsonl"
        if vec is None:
            ov = _judged_row(ctx, lm, qs, judge, path, samples, mnt)
        else:
            with api.ablate(lm, vec, layers):
                ov = _judged_row(ctx, lm, qs, judge, path, samples, mnt)
        api.append_jsonl(rows_path, {"target": f"{arm}.seed-{cfg.seeds[0]}", "condition": name,
                                     "layers": layers, **ov})
    rows = api.read_rows(rows_path)
    return {"conditions": {r["condition"]: r["misaligned_share"] for r in rows}}


# ----------------------------------------------------------------------------- probes


def stage_probes(ctx: RunContext) -> dict[str, Any]:
    """Per-layer logistic probes (cross-validated accuracy), judged labels or arm labels."""
    cfg, pc = ctx.cfg, ctx.cfg.interp.probes
    ev = cfg.eval
    summ = eval_summary(ctx)["models"]
    convs = []
    for key in summ:
        if (ctx.dir("eval") / f"{key}.jsonl").exists():
            convs += answered_conversations(ctx, key)
    labels, note = pc.labels, ""
    pos = [c for c in convs if api.is_misaligned(c["meta"], ev.aligned_threshold, ev.coherent_threshold)]
    neg = [c for c in convs if api.is_aligned(c["meta"], ev.aligned_threshold, ev.coherent_threshold)]
    if labels == "judged" and min(len(pos), len(neg)) < pc.min_per_class:
        note = (f"only {len(pos)} misaligned / {len(neg)} aligned judged answers (< {pc.min_per_class}): "
                "fell back to arm labels (finetuned-arm answers vs base answers)")
        labels = "arm"
    if labels == "arm":
        finals = {f"{cfg.direction_arm}.seed-{s}" for s in cfg.seeds}
        pos = [c for c in convs if c["meta"].get("model_key") in finals]
        neg = [c for c in convs if c["meta"].get("model_key") == "base"]
    k = min(len(pos), len(neg))
    if k < 2:
        raise EmInterpError(f"probes need at least 2 examples per class; got {len(pos)} and {len(neg)}",
                            field="interp.probes")
    lm = load(ctx, find_target(ctx, cfg.direction_arm) if cfg.direction_arm else None)
    layers = _layers(pc.layers, lm.n_layers)
    result = api.train_probes(lm, [c["messages"] for c in pos], [c["messages"] for c in neg], layers,
                              cfg.interp.directions.site, min(pc.cv_folds, k), ctx.stage_dir)
    out = {"labels": labels, "note": note, "n_pos": len(pos), "n_neg": len(neg),
           "site": cfg.interp.directions.site, **result}
    write_json_atomic(ctx.stage_dir / "accuracy.json", out)
    best = max(range(len(out["accuracy"])), key=lambda i: out["accuracy"][i])
    return {"labels": labels, "best_layer": out["layers"][best], "best_accuracy": out["accuracy"][best]}


# ----------------------------------------------------------------------------- report


def stage_report(ctx: RunContext) -> dict[str, Any]:
    """The experiment report (report.experiment_report) and a base-vs-finetuned diff report."""
    cfg, rc = ctx.cfg, ctx.cfg.report
    summary: dict[str, Any] = {}
    if rc.diff and cfg.arm_names:
        arm = rc.diff_arm or cfg.direction_arm
        target = find_target(ctx, arm)
        texts_path = ctx.dir("directions") / "texts.jsonl"
        texts = [t["messages"] for t in read_jsonl_conversations(texts_path)] if texts_path.exists() else []
        texts = (texts or [c["messages"] for c in answered_conversations(ctx, "base")])[: rc.diff_texts]
        base_lm, ft_lm = load(ctx), load(ctx, target)
        direction = None
        if (ctx.dir("directions") / "direction.safetensors").exists():
            direction = load_direction(ctx, base_lm)
        ctx.log(f"diff report base vs {target['key']} on {len(texts)} texts")
        paths = api.diff_report(base_lm, ft_lm, texts, ctx.stage_dir / "diff", direction,
                                ctx.run_dir / target["adapter"] if target.get("adapter") else None)
        summary["diff_report"] = str(Path(paths["html"]).relative_to(ctx.run_dir))
    if rc.experiment:
        ctx.log("experiment report")
        path = api.experiment_report(ctx.run_dir, ctx.stage_dir)
        summary["report"] = str(Path(path).resolve().relative_to(ctx.run_dir.resolve()))
    elif "diff_report" in summary:
        summary["report"] = summary["diff_report"]
    return summary


# ----------------------------------------------------------------------------- the list


def default_stages() -> list[Stage]:
    """The pipeline's stages in order, with the config sections each one's fingerprint covers."""
    i = "interp"
    return [
        Stage("data", stage_data, ("data", "eval.questions", "eval.languages", "eval.forms",
                                   "eval.question_ids", "eval.max_questions")),
        Stage("train", stage_train, ("train", "device")),
        Stage("eval", stage_eval, ("eval", "data.arms")),
        Stage("directions", stage_directions, (f"{i}.directions", f"{i}.monitor"),
              enabled=lambda c: c.interp.directions.enabled),
        Stage("steering", stage_steering, (f"{i}.steering", "eval"),
              enabled=lambda c: c.interp.directions.enabled and c.interp.steering.enabled and bool(c.interp.steering.alphas)),
        Stage("ablation", stage_ablation, (f"{i}.ablation", "eval"),
              enabled=lambda c: c.interp.directions.enabled and c.interp.ablation.enabled and bool(c.arm_names)),
        Stage("probes", stage_probes, (f"{i}.probes", "eval"), enabled=lambda c: c.interp.probes.enabled),
        Stage("report", stage_report, ("report",), enabled=lambda c: c.report.experiment or c.report.diff),
    ]


__all__ = ["default_stages", "base_model_ref", "model_identity"]
