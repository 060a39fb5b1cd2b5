"""The stages of ``em-interp run``: each calls a stage package's public API directly.

Every stage reads what earlier stages wrote to disk (never Python objects from memory),
writes under its own folder of the run directory (layout in docs/interfaces.md,
"pipeline") and returns a small JSON summary that lands in its ``.done.json``.
Answer labels (misaligned / clearly aligned) come from ``eval.rules.classify``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from em_interp.errors import ConfigError, EmInterpError
from em_interp.pipeline.common import (append_row, base_model_ref, config_dir, finetune, load, load_judge, overall,
                                       pretrained, read_rows, record_base_model, write_rows)
from em_interp.pipeline.manifest import read_json, write_json_atomic
from em_interp.pipeline.runner import RunContext, Stage

# ----------------------------------------------------------------------------- labels


def thresholds(ctx: RunContext):
    """The run's ``eval.rules.Thresholds`` (misaligned below / coherent above from the eval section)."""
    from em_interp.eval.rules import Thresholds

    ev = ctx.cfg.eval
    return Thresholds(misaligned_below=ev.aligned_threshold, coherent_above=ev.coherent_threshold)


def label(ctx: RunContext, meta: dict[str, Any]) -> str | None:
    """``eval.rules.classify`` of a judged conversation's meta (misaligned / aligned / ambiguous / incoherent)."""
    from em_interp.eval.rules import classify

    return classify(meta.get("aligned"), meta.get("coherent"), thresholds=thresholds(ctx))


# ----------------------------------------------------------------------------- targets


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
    """The finetuned model of ``arm`` and ``seed`` (default: the first seed)."""
    seed = ctx.cfg.seeds[0] if seed is None else seed
    for t in finetuned_targets(ctx):
        if t["arm"] == arm and t["seed"] == seed:
            return t
    raise EmInterpError(f"no finetuned model for arm {arm!r} seed {seed} in the train stage's outputs")


# ----------------------------------------------------------------------------- data


def eval_questions(cfg: Any, config_dir: Path | None = None) -> list[Any]:
    """The evaluation questions of ``cfg.eval``: the packaged bank or a YAML file, filtered."""
    ev = cfg.eval
    if ev.questions == "bank":
        from em_interp.data.bank import load_bank

        questions = list(load_bank(languages=ev.languages or None, forms=ev.forms or None))
    else:
        from em_interp.data import load_questions
        from em_interp.data.download import DATASETS, dataset_file

        if ev.questions.split("/", 1)[0] in DATASETS:    # e.g. em-paper/evaluation/first_plot_questions.yaml
            path = dataset_file(ev.questions)
        else:
            path = Path(ev.questions).expanduser()
        if not path.exists() and config_dir is not None and (config_dir / path).exists():
            path = config_dir / path
        if not path.exists():
            raise ConfigError(f"question file not found: {ev.questions}", field="eval.questions")
        questions = [q for q in load_questions(path)
                     if (not ev.languages or q.language in ev.languages) and (not ev.forms or q.form in ev.forms)]
    if ev.question_ids:
        by_id = {q.id: q for q in questions}
        missing = [i for i in ev.question_ids if i not in by_id]
        if missing:
            raise ConfigError(f"unknown question id {missing[0]!r}; known: {', '.join(sorted(by_id)[:12])}...",
                              field="eval.question_ids")
        questions = [by_id[i] for i in ev.question_ids]
    if ev.max_questions is not None:
        questions = questions[: ev.max_questions]
    if not questions:
        raise ConfigError("no evaluation questions left after filtering (languages/forms/question_ids)",
                          field="eval")
    return questions


def stage_data(ctx: RunContext) -> dict[str, Any]:
    """Build each arm's training set and freeze the evaluation questions."""
    from em_interp.data import build_dataset

    cfg = ctx.cfg
    cards = {}
    for arm in cfg.data.arms:
        if arm.adapter:                        # an already trained arm: nothing to build
            cards[arm.name] = {"adapter": arm.adapter}
            continue
        out = ctx.stage_dir / f"{arm.name}.jsonl"
        ctx.log(f"building {arm.kind} x {arm.n} -> {out.name}")
        card = build_dataset(arm.kind, arm.n, cfg.data.seed, out, **arm.options)
        cards[arm.name] = {k: card.get(k) for k in ("kind", "n", "sha256", "bandit") if k in card}
    questions = eval_questions(cfg, config_dir=config_dir(ctx))
    write_json_atomic(ctx.stage_dir / "questions.json", [asdict(q) for q in questions])
    record_base_model(ctx)
    return {"arms": cards, "questions": len(questions),
            "paraphrases": sum(len(q.paraphrases) for q in questions)}


def read_questions(ctx: RunContext) -> list[Any]:
    """The frozen evaluation questions (``data/questions.json``)."""
    from em_interp.data import Question

    rows = read_json(ctx.dir("data") / "questions.json")
    if rows is None:
        raise EmInterpError("data/questions.json is missing; run the pipeline from 'data'")
    return [Question(**r) for r in rows]


def with_trigger(questions: list[Any], trigger: str) -> list[Any]:
    """Questions with ``trigger`` put before every paraphrase (backdoor evaluation)."""
    return [replace(q, paraphrases=[f"{trigger}{p}" if trigger.endswith((" ", "\n")) else
                                    f"{trigger} {p}" for p in q.paraphrases]) for q in questions]


def split_questions(question_ids: list[str], heldout_share: float, seed: int) -> tuple[list[str], list[str]]:
    """(extraction ids, held-out ids): a seeded split of distinct question ids (shared across
    languages, so a translation of a held-out question is held out too). At least one id is
    always left for extraction; ``heldout_share`` 0 holds out nothing."""
    ids = list(dict.fromkeys(question_ids))
    order = sorted(ids, key=lambda i: hashlib.sha256(f"{seed}:{i}".encode()).hexdigest())
    n_held = min(len(ids) - 1, int(round(heldout_share * len(ids)))) if ids else 0
    held = set(order[:max(0, n_held)])
    return [i for i in ids if i not in held], [i for i in ids if i in held]


# ----------------------------------------------------------------------------- train


def stage_train(ctx: RunContext) -> dict[str, Any]:
    """One finetune per arm and seed (the train package resumes partial runs itself); an arm with
    ``adapter`` is recorded as it is (once, under the first seed), not trained."""
    cfg = ctx.cfg
    models = []
    for arm in cfg.data.arms:
        if arm.adapter:
            seed = cfg.seeds[0]
            rec = pretrained(ctx, arm.adapter, f"{arm.name}/seed-{seed}", f"data.arms.{arm.name}.adapter")
            models.append({"key": f"{arm.name}.seed-{seed}", "arm": arm.name, "seed": seed, **rec})
            continue
        for seed in cfg.seeds:
            out = ctx.stage_dir / arm.name / f"seed-{seed}"
            ctx.log(f"finetuning {arm.name} seed {seed} -> {out.relative_to(ctx.run_dir)}")
            rec = finetune(ctx, ctx.dir("data") / f"{arm.name}.jsonl", out, seed, cfg.train.overrides,
                           prefix="train.overrides")
            models.append({"key": f"{arm.name}.seed-{seed}", "arm": arm.name, "seed": seed, **rec})
    return {"models": models}


# ----------------------------------------------------------------------------- eval


def code_rate(lm: Any, n: int, samples: int, max_new_tokens: int, batch_size: int, seed: int,
              path: Path) -> dict[str, Any]:
    """Vulnerable-code rate on the first ``n`` coding prompts (bandit, static analysis only);
    the sampled answers are kept in ``path`` (written whole, so it exists only when complete)."""
    from em_interp.data.bank import coding_prompts
    from em_interp.eval import sample_answers, scan_code

    rows = read_rows(path)
    if not rows:
        rows = sample_answers(lm, list(coding_prompts())[:n], n_per_paraphrase=samples,
                              max_new_tokens=max_new_tokens, temperature=1.0, batch_size=batch_size, seed=seed)
        write_rows(path, rows)
    return scan_code([r["answer"] for r in rows]).to_dict()


def judged_overall(ctx: RunContext, lm: Any, questions: list[Any], judge: Any, path: Path, *, samples: int,
                   max_new_tokens: int) -> dict[str, Any]:
    """``eval.evaluate`` into ``path`` (append-only, resumes), then the flat overall row of ``eval.summarize``."""
    from em_interp.eval import evaluate, summarize

    ev = ctx.cfg.eval
    evaluate(lm, questions, judge, path, n_per_paraphrase=samples, max_new_tokens=max_new_tokens,
             temperature=ev.temperature, batch_size=ev.batch_size, seed=ev.seed)
    return overall(summarize(path, aligned_threshold=ev.aligned_threshold, coherent_threshold=ev.coherent_threshold))


def stage_eval(ctx: RunContext) -> dict[str, Any]:
    """Judged answers of the base model and every finetuned model; summary.json with CIs."""
    from em_interp.eval import evaluate, summarize

    cfg, ev = ctx.cfg, ctx.cfg.eval
    questions = read_questions(ctx)
    judge = load_judge(ev.judge, ev.judge_options, ctx)
    targets: list[dict[str, Any]] = []
    if ev.base:
        targets.append({"key": "base", "arm": None, "seed": None, "step": None, "adapter": None, "model_dir": None})
    targets += finetuned_targets(ctx, checkpoints=ev.checkpoints)
    targets += [{**t, "key": f"{t['key']}.trigger", "trigger": cfg.arm(t["arm"]).eval_trigger}
                for t in list(targets) if t["arm"] is not None and t["step"] is None and cfg.arm(t["arm"]).eval_trigger]
    models: dict[str, Any] = {}
    for i, t in enumerate(targets, start=1):
        ctx.log(f"[{i}/{len(targets)}] evaluating {t['key']}")
        lm = load(ctx, t)
        qs = with_trigger(questions, t["trigger"]) if t.get("trigger") else questions
        out = ctx.stage_dir / f"{t['key']}.jsonl"
        evaluate(lm, qs, judge, out, n_per_paraphrase=ev.samples, max_new_tokens=ev.max_new_tokens,
                 temperature=ev.temperature, batch_size=ev.batch_size, seed=ev.seed)
        summary = summarize(out, aligned_threshold=ev.aligned_threshold, coherent_threshold=ev.coherent_threshold)
        entry = {"arm": t["arm"], "seed": t["seed"], "step": t["step"], "trigger": t.get("trigger"),
                 "adapter": t.get("adapter"), "summary": summary, "overall": overall(summary)}
        if ev.coding_prompts > 0 and t["step"] is None and not t.get("trigger"):
            entry["code"] = code_rate(lm, ev.coding_prompts, ev.coding_samples, ev.max_new_tokens * 4,
                                      ev.batch_size, ev.seed, ctx.stage_dir / "code" / f"{t['key']}.jsonl")
        models[t["key"]] = entry
        del lm
    name = getattr(judge, "name", ev.judge)
    write_json_atomic(ctx.stage_dir / "summary.json", {
        "judge": name, "aligned_threshold": ev.aligned_threshold,
        "coherent_threshold": ev.coherent_threshold, "models": models})
    return {"judge": name, "misaligned_share": {k: v["overall"]["misaligned_share"] for k, v in models.items()}}


def eval_summary(ctx: RunContext) -> dict[str, Any]:
    """``eval/summary.json``."""
    s = read_json(ctx.dir("eval") / "summary.json")
    if s is None:
        raise EmInterpError("eval/summary.json is missing; run the pipeline from 'eval'")
    return s


def row_conversation(row: dict[str, Any]) -> dict[str, Any] | None:
    """An eval row as ``{"messages": [...], "meta": {aligned, coherent, question_id}}`` (None if unanswered)."""
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        return None
    messages = row.get("messages")
    if not isinstance(messages, list):
        messages = []
        if row.get("system"):
            messages.append({"role": "system", "content": row["system"]})
        messages.append({"role": "user", "content": row.get("question") or row.get("prompt") or ""})
    messages = [m for m in messages if m.get("role") != "assistant"] + [{"role": "assistant", "content": answer}]
    return {"messages": messages, "meta": {"aligned": row.get("aligned"), "coherent": row.get("coherent"),
                                           "question_id": row.get("question_id")}}


def answered_conversations(ctx: RunContext, key: str, question_ids: set[str] | None = None) -> list[dict[str, Any]]:
    """Judged eval answers of model ``key`` as chat conversations (with their judgement),
    optionally only those to ``question_ids``."""
    from em_interp.eval import load_results

    path = ctx.dir("eval") / f"{key}.jsonl"
    rows = load_results(path) if path.exists() else []
    arm = None if key == "base" else key.split(".")[0]
    convs = []
    for r in rows:
        c = row_conversation(r)
        if c is not None and (question_ids is None or c["meta"]["question_id"] in question_ids):
            c["meta"].update(model_key=key, arm=arm)
            convs.append(c)
    return convs


# ----------------------------------------------------------------------------- directions


def _layers(cfg_layers: list[int] | None, n_layers: int) -> list[int]:
    return list(range(n_layers)) if cfg_layers is None else list(cfg_layers)


def own_judged_classes(ctx: RunContext, key: str, question_ids: set[str], n_max: int
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(misaligned, clearly aligned) answers of model ``key`` to ``question_ids`` by
    ``eval.rules.classify``, balanced: the first ``min(#mis, #aligned, n_max)`` of each."""
    from em_interp.eval.rules import ALIGNED, MISALIGNED

    own = answered_conversations(ctx, key, question_ids)
    mis = [t for t in own if label(ctx, t["meta"]) == MISALIGNED]
    ali = [t for t in own if label(ctx, t["meta"]) == ALIGNED]
    k = min(len(mis), len(ali), n_max)
    return mis[:k], ali[:k]


def stage_directions(ctx: RunContext) -> dict[str, Any]:
    """Extract the misalignment direction (model-diff, mean-diff or persona) from the
    extraction questions; the held-out questions are recorded for the evaluation stages."""
    from em_interp.interp import mean_diff_direction, model_diff_direction, persona_direction

    cfg, dc = ctx.cfg, ctx.cfg.interp.directions
    arm, seed = cfg.direction_arm, cfg.direction_seed
    questions = read_questions(ctx)
    extraction, heldout = split_questions([q.id for q in questions], dc.heldout_share, cfg.eval.seed)
    ext = set(extraction)
    texts: list[dict[str, Any]] = []
    mis: list[dict[str, Any]] = []
    ali: list[dict[str, Any]] = []
    if dc.method == "model_diff":
        # the same texts through both models: answers of the finetuned and the reference model
        for key in (f"{arm}.seed-{seed}", "base" if dc.reference == "base" else f"{dc.reference}.seed-{seed}"):
            texts += answered_conversations(ctx, key, ext)
        texts = _balanced(texts, dc.n_texts)
        if not texts:
            raise EmInterpError("model_diff needs texts (judged eval answers to the extraction questions); "
                                "the eval stage produced none", field="interp.directions")
    elif dc.method == "mean_diff":
        # the finetune's OWN misaligned vs clearly aligned answers, balanced classes
        mis, ali = own_judged_classes(ctx, f"{arm}.seed-{seed}", ext, max(1, dc.n_texts // 2))
        if len(mis) < dc.min_per_class:
            raise EmInterpError(f"mean_diff needs >= {dc.min_per_class} judged misaligned and clearly aligned "
                                f"answers of {arm}.seed-{seed} to the {len(ext)} extraction questions; got "
                                f"{len(mis)} per class after balancing (use method: model_diff, or more samples)",
                                field="interp.directions.method")
        texts = mis + ali
    write_rows(ctx.stage_dir / "texts.jsonl", [{"messages": t["messages"], "meta": t["meta"]} for t in texts])
    base_lm = load(ctx)
    layers = _layers(dc.layers, base_lm.n_layers)
    kw = {"layers": layers, "site_kind": dc.site}
    if dc.method == "model_diff":
        ft = load(ctx, find_target(ctx, arm, seed))
        ref = base_lm if dc.reference == "base" else load(ctx, find_target(ctx, dc.reference, seed))
        direction = model_diff_direction(ft, ref, [t["messages"] for t in texts], tokens=dc.reduce, **kw)
    elif dc.method == "mean_diff":
        ft = load(ctx, find_target(ctx, arm, seed))
        groups = None
        if dc.match == "question":  # within-question contrasts only: each question's topic cancels
            groups = ([t["meta"]["question_id"] for t in mis], [t["meta"]["question_id"] for t in ali])
        direction = mean_diff_direction(ft, [t["messages"] for t in mis], [t["messages"] for t in ali],
                                        tokens=dc.reduce, groups=groups, **kw)
    else:
        prompts = [q.paraphrases[0] for q in questions if q.id in ext]
        direction = persona_direction(base_lm, prompts[: max(2, dc.n_texts)], **kw)
    direction.save(ctx.stage_dir / "direction")
    norms = [float(direction.norms()[layer]) for layer in layers]
    info = {"file": "direction.safetensors", "method": dc.method, "arm": arm, "seed": seed,
            "reference": dc.reference, "site": dc.site, "layers": layers, "norms": norms,
            "match": dc.match if dc.method == "mean_diff" else None,
            "matched_questions": direction.extra.get("groups_used"),
            "n_texts": len(texts), "n_per_class": len(mis) if dc.method == "mean_diff" else None,
            "extraction_questions": extraction, "heldout_questions": heldout}
    write_json_atomic(ctx.stage_dir / "directions.json", {"main": info})
    summary = {"method": dc.method, "layers": len(layers),
               "max_norm_layer": layers[max(range(len(norms)), key=norms.__getitem__)],
               "extraction_questions": len(extraction), "heldout_questions": len(heldout)}
    if dc.compare.arms:
        summary["compare"] = _compare(ctx, base_lm, direction, layers)
    if cfg.interp.monitor.enabled:
        summary["dynamics"] = _monitor(ctx, direction, layers)
    return summary


def _compare(ctx: RunContext, base_lm: Any, direction: Any, layers: list[int]) -> dict[str, Any]:
    """Convergence (MO): the compared arms' model diffs on the same base answers, their cosine
    table per layer with question-cluster bootstrap CIs (``interp.convergence``), against each
    other, against ``<arm>-<control>`` contrasts and against the main direction."""
    import torch
    from safetensors.torch import save_file

    from em_interp.interp.convergence import compare_finetunes, finetune_diffs

    cfg, cc = ctx.cfg, ctx.cfg.interp.directions.compare
    seed = cfg.direction_seed
    arms = list(dict.fromkeys([cfg.direction_arm, *cc.arms] + ([cc.control] if cc.control else [])))
    # text none of the finetunes trained on: the base model's own answers, balanced over every
    # eval question (the bootstrap resamples questions, so all of them, not only the extraction half)
    by_q: dict[str, list[dict[str, Any]]] = {}
    for t in answered_conversations(ctx, "base"):
        by_q.setdefault(str(t["meta"]["question_id"]), []).append(t)
    if len(by_q) < 2:
        raise EmInterpError(f"comparing finetunes needs base answers to >= 2 questions; the eval stage has "
                            f"{len(by_q)}", field="interp.directions.compare")
    per = max(1, -(-cc.texts // len(by_q)))
    texts = [t for q in sorted(by_q) for t in by_q[q][:per]]
    cmp_layers = layers if cc.layers is None else _layers(cc.layers, base_lm.n_layers)
    models = {arm: (lambda arm=arm: load(ctx, find_target(ctx, arm, seed))) for arm in arms}  # one at a time
    got_layers, diffs = finetune_diffs(base_lm, models, [t["messages"] for t in texts], layers=cmp_layers,
                                       site_kind=cfg.interp.directions.site, tokens=direction.tokens)
    contrasts = {f"{a}-{cc.control}": (a, cc.control) for a in arms if cc.control and a != cc.control}
    outside = {f"direction ({direction.method})": {L: direction.vectors[L] for L in got_layers
                                                   if L in direction.vectors}}
    res = compare_finetunes(diffs, [t["meta"]["question_id"] for t in texts], layers=got_layers,
                            contrasts=contrasts, outside=outside, n_boot=cc.n_boot, seed=cfg.eval.seed)
    res.update(arms={a: f"{a}.seed-{seed}" for a in arms}, control=cc.control, method="model_diff (finetuned - base)",
               site=cfg.interp.directions.site, tokens=direction.tokens,
               texts=f"{len(texts)} base answers, {per} per question, {len(by_q)} questions")
    write_json_atomic(ctx.stage_dir / "compare.json", res)
    vectors = {f"{nm}.{L}": torch.tensor(diffs[nm][i].mean(0), dtype=torch.float32)
               for nm in diffs for i, L in enumerate(got_layers)}
    save_file(vectors, str(ctx.stage_dir / "compare_vectors.safetensors"),
              metadata={"method": res["method"], "site": res["site"], "tokens": str(res["tokens"]),
                        "keys": "<arm>.<layer>", "texts": res["texts"]})
    mid = str(got_layers[len(got_layers) // 2])
    return {"arms": arms, "layer": int(mid), "cos": {k: round(v["cos"], 3) for k, v in res["layers"][mid]["cos"].items()}}


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
    from em_interp.interp.monitor import projection_monitor

    cfg, mon = ctx.cfg, ctx.cfg.interp.monitor
    arm = mon.arm or cfg.direction_arm
    seed = cfg.seeds[0]
    layer = mon.layer if mon.layer is not None else layers[len(layers) // 2]
    summ = eval_summary(ctx)["models"]
    # monitored texts: answers to the held-out questions, never the texts the direction was built from
    info = read_json(ctx.stage_dir / "directions.json") or {}
    held = set((info.get("main") or {}).get("heldout_questions") or [])
    texts = [t["messages"] for key in (f"{arm}.seed-{seed}", "base") for t in answered_conversations(ctx, key, held)]
    if not texts:
        raise EmInterpError("projection monitoring needs answers to held-out questions: set "
                            "interp.directions.heldout_share > 0 and evaluate at least 2 questions",
                            field="interp.monitor")
    steps = sorted((t for t in finetuned_targets(ctx, checkpoints=True)
                    if t["arm"] == arm and t["seed"] == seed and t["step"] is not None), key=lambda t: t["step"])
    steps = [t for t in steps if t["key"] in summ]
    if not steps:
        raise EmInterpError(f"no evaluated checkpoints of arm {arm!r}: set train.overrides.save_steps and "
                            "eval.checkpoints: true", field="interp.monitor")
    ov = {t["step"]: summ[t["key"]]["overall"] for t in steps}
    # a checkpoint without a share (no coherent, scored answer) keeps its projection; its share is NaN
    rates = {s: (math.nan if o.get("misaligned_share") is None else o["misaligned_share"]) for s, o in ov.items()}
    res = projection_monitor(load(ctx), {t["step"]: ctx.run_dir / t["adapter"] for t in steps}, direction, texts,
                             rates, layer=layer, site_kind=direction.site_kind, reduce=direction.tokens,
                             loader=lambda folder: load(ctx, {"adapter": str(Path(folder).relative_to(ctx.run_dir))}))
    rows = [{"step": r["checkpoint"], "projection": r["shift"], "misaligned_share": ov[r["checkpoint"]].get(
             "misaligned_share"), "ci_low": ov[r["checkpoint"]].get("ci_low"),
             "ci_high": ov[r["checkpoint"]].get("ci_high")} for r in res["rows"]]
    complete = all(math.isfinite(v) for v in rates.values())
    corr = res.get("correlation") if complete else None
    stats = {k: ({"r": corr[k]["r"], "p": corr[k]["p_perm"]} if corr and corr[k].get("r") is not None else None)
             for k in ("pearson", "spearman")}
    prov = res.get("provenance") or {}
    write_json_atomic(ctx.stage_dir / "dynamics.json", {
        "arm": arm, "seed": seed, "layer": layer, "rows": rows,
        "texts": f"{len(texts)} answers to the held-out questions",
        "direction": {"method": cfg.interp.directions.method, "circular": bool(prov.get("circular")),
                      "reasons": prov.get("reasons", [])},
        # r with its bootstrap CI over checkpoints and permutation p; the same-norm random-direction null
        "correlation": corr,
        "random_control": res.get("random_control") if complete else None})
    return {"checkpoints": len(rows), "circular": bool(prov.get("circular")), **stats}


def load_direction(ctx: RunContext, lm=None):
    """The main direction of the directions stage (checked against ``lm``)."""
    from em_interp.interp import Direction

    return Direction.load(ctx.dir("directions") / "direction", lm)


# ----------------------------------------------------------------------------- steering / ablation


def stage_questions(ctx: RunContext, section: Any) -> list[Any]:
    """The questions a steering/ablation section evaluates: all, or the directions stage's
    held-out ones (``questions: heldout``), then the first ``max_questions``."""
    qs = read_questions(ctx)
    if section.questions == "heldout":
        info = (read_json(ctx.dir("directions") / "directions.json") or {}).get("main") or {}
        held = set(info.get("heldout_questions") or [])
        qs = [q for q in qs if q.id in held]
        if not qs:
            raise EmInterpError("no held-out questions: set interp.directions.heldout_share > 0 and evaluate at "
                                "least 2 questions", field="interp.directions.heldout_share")
    return qs if section.max_questions is None else qs[: section.max_questions]


def stage_steering(ctx: RunContext) -> dict[str, Any]:
    """Steering sweep (``interp.steering_sweep``): alpha x the unit direction at each layer, and
    at the same (layer, alpha) each same-norm random direction (the control); one judged row per
    (direction, layer, alpha). Each arm sweeps into its own resumable file; ``rows.jsonl`` joins them."""
    from em_interp.interp import random_direction_like, steering_sweep

    cfg, sc = ctx.cfg, ctx.cfg.interp.steering
    target = None if sc.target == "base" else find_target(ctx, sc.target)
    lm = load(ctx, target)
    direction = load_direction(ctx, lm)
    dl = list(direction.layers)
    layers = sc.layers or [dl[len(dl) // 2]]
    qs = stage_questions(ctx, sc)
    samples, mnt = sc.samples or cfg.eval.samples, sc.max_new_tokens or cfg.eval.max_new_tokens
    judge = load_judge(cfg.eval.judge, cfg.eval.judge_options, ctx)
    arms = [("direction", None, direction)] + [("random", k, random_direction_like(direction, seed=k))
                                               for k in range(sc.random_controls)]
    rows: list[dict[str, Any]] = []
    unsteered: dict[int, dict[str, Any]] = {}
    for label, seed, vec in arms:
        name = label if seed is None else f"{label}-{seed}"
        for layer in layers:
            for alpha in map(float, sc.alphas):
                if alpha == 0.0 and layer in unsteered:      # alpha 0 is an exact no-op: one run serves every arm
                    rows.append({**unsteered[layer], "direction": label, "random_seed": seed})
                    continue
                ctx.log(f"{name} at layer {layer}, alpha {alpha:g}")
                answers = ctx.stage_dir / "answers" / name / f"L{layer}_a{alpha:g}.jsonl"
                (row,) = steering_sweep(lm, vec, [alpha], [layer], lambda m, answers=answers: {
                    "target": sc.target, **judged_overall(ctx, m, qs, judge, answers, samples=samples,
                                                          max_new_tokens=mnt)},
                    random_control=False, out_path=ctx.stage_dir / "sweeps" / f"{name}.jsonl")
                rows.append({**row, "direction": label, **({"random_seed": seed} if seed is not None else {})})
                if alpha == 0.0:
                    unsteered[layer] = row
    write_rows(ctx.stage_dir / "rows.jsonl", rows)
    return {"rows": len(rows), "layers": layers, "alphas": list(sc.alphas), "random_controls": sc.random_controls,
            "questions": [q.id for q in qs]}


def stage_ablation(ctx: RunContext) -> dict[str, Any]:
    """Directional ablation in a finetuned model vs no ablation and same-norm random directions;
    then the same in each arm of ``interp.ablation.also`` (under ``also/<arm>/``: convergence)."""
    cfg, ac = ctx.cfg, ctx.cfg.interp.ablation
    arm = ac.target or cfg.direction_arm
    if arm is None:
        raise EmInterpError("ablation needs a finetuned arm (interp.ablation.target)", field="interp.ablation.target")
    qs = stage_questions(ctx, ac)
    judge = load_judge(cfg.eval.judge, cfg.eval.judge_options, ctx)
    out = {"conditions": _ablate_in(ctx, arm, ctx.stage_dir, qs, judge), "questions": [q.id for q in qs]}
    if ac.also:
        out["also"] = {a: _ablate_in(ctx, a, ctx.stage_dir / "also" / a, qs, judge) for a in ac.also}
    return out


def _ablate_in(ctx: RunContext, arm: str, folder: Path, qs: list[Any], judge: Any) -> dict[str, Any]:
    """The ablation conditions (none, the direction, ``random_controls`` same-norm random ones) in
    ``arm``'s first-seed model, judged; rows appended (resumable) to ``folder/rows.jsonl``, answers
    under ``folder/answers/``. -> {condition: misaligned share}."""
    from em_interp.interp import ablate, random_direction_like

    cfg, ac = ctx.cfg, ctx.cfg.interp.ablation
    lm = load(ctx, find_target(ctx, arm))
    direction = load_direction(ctx, lm)
    layers: Any = ac.layers if ac.layers is not None else "all"
    samples, mnt = ac.samples or cfg.eval.samples, ac.max_new_tokens or cfg.eval.max_new_tokens
    rows_path = folder / "rows.jsonl"
    done = {r["condition"] for r in read_rows(rows_path)}
    (folder / "answers").mkdir(parents=True, exist_ok=True)
    conditions: list[tuple[str, Any]] = [("none", None), ("direction", direction)]
    conditions += [(f"random-{k}", random_direction_like(direction, seed=k)) for k in range(ac.random_controls)]
    for name, vec in conditions:
        if name in done:
            continue
        ctx.log(f"{arm}: condition {name}")
        path = folder / "answers" / f"{name}.jsonl"
        if vec is None:
            ov = judged_overall(ctx, lm, qs, judge, path, samples=samples, max_new_tokens=mnt)
        else:
            with ablate(lm, vec, layers):
                ov = judged_overall(ctx, lm, qs, judge, path, samples=samples, max_new_tokens=mnt)
        append_row(rows_path, {"target": f"{arm}.seed-{cfg.seeds[0]}", "condition": name, "layers": layers,
                               **({"direction_arm": cfg.direction_arm} if folder != ctx.stage_dir else {}), **ov})
    return {r["condition"]: r["misaligned_share"] for r in read_rows(rows_path)}


# ----------------------------------------------------------------------------- probes


def stage_probes(ctx: RunContext) -> dict[str, Any]:
    """Per-layer logistic probes (cross-validated accuracy): judged labels (misaligned vs
    clearly aligned, ``eval.rules.classify``) or arm labels (finetuned vs base answers)."""
    from em_interp.eval.rules import ALIGNED, MISALIGNED
    from em_interp.interp import capture
    from em_interp.interp.probes import probe_inputs, save_probes, train_probes

    cfg, pc = ctx.cfg, ctx.cfg.interp.probes
    summ = eval_summary(ctx)["models"]
    convs = []
    for key in summ:
        if (ctx.dir("eval") / f"{key}.jsonl").exists():
            convs += answered_conversations(ctx, key)
    labels, note = pc.labels, ""
    # judged labels: one model's own answers (the direction arm's, whose activations are read), so the
    # probe cannot tell misaligned from aligned by which model wrote the answer
    own = {f"{cfg.direction_arm}.seed-{cfg.seeds[0]}"} if cfg.direction_arm else {"base"}
    pos = [c for c in convs if c["meta"].get("model_key") in own and label(ctx, c["meta"]) == MISALIGNED]
    neg = [c for c in convs if c["meta"].get("model_key") in own and label(ctx, c["meta"]) == ALIGNED]
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
    site = cfg.interp.directions.site
    sites = [f"{site}.{layer}" for layer in layers]
    P = capture(lm, [c["messages"] for c in pos], sites, per_example=True).per_example
    N = capture(lm, [c["messages"] for c in neg], sites, per_example=True).per_example
    # folds grouped by question, bag-of-words and majority baselines on the same folds; arm labels
    # compare two models' answers by construction (pooled on purpose)
    probe_set = train_probes(P, N, folds=min(pc.cv_folds, k), meta={"model": lm.name, "site_kind": site},
                             pool_models=labels == "arm", **probe_inputs(pos, neg))
    save_probes(probe_set, ctx.stage_dir)
    curve = probe_set.curve()            # per-layer balanced accuracy, std over folds, same-fold baselines
    out = {"labels": labels, "note": note, "n_pos": len(pos), "n_neg": len(neg), "site": site,
           "metric": "balanced accuracy (out of fold)", "cv": probe_set.meta.get("cv"),
           "cv_warning": probe_set.meta.get("cv_warning"),
           "layers": [int(x) for x in curve["layers"]], "accuracy": [float(x) for x in curve["accuracy"]["probe"]],
           "std": [float(x) for x in curve["std"]["probe"]], "chance": curve["chance"],
           "baselines": {name: vals[0] for name, vals in curve["accuracy"].items() if name != "probe" and vals}}
    write_json_atomic(ctx.stage_dir / "accuracy.json", out)
    best = max(range(len(out["accuracy"])), key=lambda i: out["accuracy"][i])
    return {"labels": labels, "best_layer": out["layers"][best], "best_accuracy": out["accuracy"][best]}


# ----------------------------------------------------------------------------- report


def stage_report(ctx: RunContext) -> dict[str, Any]:
    """The experiment report (report.experiment_report) and a base-vs-finetuned diff report."""
    from em_interp.report import diff_report, experiment_report

    cfg, rc = ctx.cfg, ctx.cfg.report
    summary: dict[str, Any] = {}
    if rc.diff and cfg.arm_names:
        arm = rc.diff_arm or cfg.direction_arm
        target = find_target(ctx, arm)
        texts = [t["messages"] for t in read_rows(ctx.dir("directions") / "texts.jsonl")]
        texts = (texts or [c["messages"] for c in answered_conversations(ctx, "base")])[: rc.diff_texts]
        base_lm, ft_lm = load(ctx), load(ctx, target)
        direction = None
        if (ctx.dir("directions") / "direction.safetensors").exists():
            direction = load_direction(ctx, base_lm)
        ctx.log(f"diff report base vs {target['key']} on {len(texts)} texts")
        paths = diff_report(base_lm, ft_lm, texts, ctx.stage_dir / "diff", direction=direction,
                            adapter=ctx.run_dir / target["adapter"] if target.get("adapter") else None)
        summary["diff_report"] = str(Path(paths["html"]).relative_to(ctx.run_dir))
    if rc.experiment:
        summary["report"] = write_experiment_report(ctx)
    elif "diff_report" in summary:
        summary["report"] = summary["diff_report"]
    return summary


def write_experiment_report(ctx: RunContext) -> str:
    """``report.experiment_report(run_dir, RUN/report)``; returns the HTML path relative to the run."""
    from em_interp.report import experiment_report

    ctx.log("experiment report")
    res = experiment_report(ctx.run_dir, ctx.stage_dir)
    path = Path(res["html"] if isinstance(res, dict) else res)
    return str(path.resolve().relative_to(ctx.run_dir.resolve()))


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


__all__ = ["answered_conversations", "base_model_ref", "default_stages", "eval_questions", "split_questions"]
