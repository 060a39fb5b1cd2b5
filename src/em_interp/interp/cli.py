"""`em-interp extract | steer | ablate | probe | lora-analysis` (thin: parse, call, write, print paths).

Each command writes under ``artifacts/<command>/`` unless ``--out`` says otherwise.
Inputs: ``--positive/--negative`` example files (chat JSONL, question/answer JSONL or
CSV, or .txt lines) or ``--judged`` (judged answers, split misaligned vs aligned).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

from em_interp.cli_options import PROGRESS_HELP, with_progress
from em_interp.errors import InterpError

ART = Path("artifacts")
PROGRESS = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP)


def _layers(spec: str) -> Any:
    if spec == "all":
        return "all"
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise InterpError(f"--layers must be 'all' or comma-separated integers, got {spec!r}", field="layers") from None


def _load(model: str, adapter: Optional[str]):
    from em_interp.models import load_model

    return load_model(model, adapter=adapter)


def _check_limit(limit: int | None) -> None:
    from em_interp.config import check_number

    try:
        check_number("--limit", limit, low=1, integer=True, optional=True)
    except ValueError as exc:
        raise InterpError(str(exc), field="limit") from None


def _pos_neg(positive: Optional[Path], negative: Optional[Path], judged: Optional[Path], limit: int | None = None,
             seed: int = 0):
    """The two example sets; ``limit`` keeps a seeded random sample of at most that many per side."""
    _check_limit(limit)
    import random

    from em_interp.interp.data_io import load_examples, load_judged, split_judged

    if judged is not None:
        pos, neg = split_judged(load_judged(judged), path=judged)
    elif positive is None or negative is None:
        raise InterpError("give --judged FILE, or both --positive FILE and --negative FILE")
    else:
        pos, neg = load_examples(positive), load_examples(negative)
    if limit is not None:
        rng = random.Random(seed)
        pos = rng.sample(pos, min(limit, len(pos)))
        neg = rng.sample(neg, min(limit, len(neg)))
    return pos, neg


def _prompts(prompt: list[str], questions: Optional[Path]) -> list[str]:
    from em_interp.interp.extract import DEFAULT_PERSONA_QUESTIONS

    if questions is not None:
        from em_interp.data import load_questions

        return [q.paraphrases[0] for q in load_questions(questions)]
    return list(prompt) or DEFAULT_PERSONA_QUESTIONS[:4]


def extract_cmd(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m", help="Registry name, hub id or folder."),
    adapter: Optional[str] = typer.Option(None, help="peft adapter folder (the finetuned model)."),
    method: str = typer.Option("mean_diff", help="mean_diff | model_diff | persona | probe | pca"),
    positive: Optional[Path] = typer.Option(None, help="Positive (e.g. misaligned) examples file."),
    negative: Optional[Path] = typer.Option(None, help="Negative (e.g. aligned) examples file."),
    judged: Optional[Path] = typer.Option(None, help="Judged answers (eval results JSONL or CSV/JSONL)."),
    examples: Optional[Path] = typer.Option(None, help="model_diff: texts run through both models."),
    base: Optional[str] = typer.Option(None, help="model_diff: base model (default: --model without adapter)."),
    persona: str = typer.Option("evil", help="persona: built-in persona pair."),
    layers: str = typer.Option("all", help="'all' or e.g. '4,8,12'."),
    site_kind: str = typer.Option("resid_post", help="resid_post | resid_pre | attn_out | mlp_out"),
    tokens: str = typer.Option("response", help="Tokens averaged per example: response | prompt | all | last_prompt"),
    reduce: Optional[str] = typer.Option(None, hidden=True, help="Deprecated spelling of --tokens."),
    backend: str = typer.Option("hf", help="hf | transformer_lens | nnsight"),
    batch_size: int = typer.Option(8),
    limit: Optional[int] = typer.Option(None, help="At most this many examples per side (seeded sample)."),
    seed: int = typer.Option(0),
    out: Optional[Path] = typer.Option(None, help="Output folder (default artifacts/extract): <method>.safetensors + .json."),
    progress: Optional[bool] = PROGRESS,
) -> None:
    """Extract a per-layer direction and save it (safetensors + JSON metadata)."""
    from em_interp.interp import extract as ex
    from em_interp.interp.inputs import LEGACY_REDUCE, resolve_tokens

    tokens = resolve_tokens(LEGACY_REDUCE.get(reduce, reduce) if reduce else tokens)
    _check_limit(limit)  # before the model loads
    lm = _load(model, adapter)
    kw = dict(layers=_layers(layers), site_kind=site_kind, tokens=tokens, backend=backend, batch_size=batch_size)
    if method == "model_diff":
        from em_interp.interp.data_io import load_examples

        if examples is None or (adapter is None and base is None):
            raise InterpError("model_diff needs --examples and a finetuned model (--adapter, or --base for the base)")
        base_lm = _load(base or model, None)
        d = ex.model_diff_direction(lm, base_lm, load_examples(examples), **kw)
    elif method == "persona":
        qs = None
        if examples is not None:
            from em_interp.interp.data_io import load_examples

            qs = [e if isinstance(e, str) else e["messages"][-2]["content"] for e in load_examples(examples)]
        d = ex.persona_direction(lm, qs, persona=persona, **kw)
    elif method in ("mean_diff", "probe", "pca"):
        pos, neg = _pos_neg(positive, negative, judged, limit, seed)
        fn = {"mean_diff": ex.mean_diff_direction, "probe": ex.probe_direction, "pca": ex.pca_direction}[method]
        d = fn(lm, pos, neg, **kw)
    else:
        raise InterpError(f"unknown method '{method}'; valid: mean_diff, model_diff, persona, probe, pca",
                          field="method")
    path = d.save((out or ART / "extract") / method)
    typer.echo(f"{d!r}\nnorms: " + ", ".join(f"{k}:{v:.3g}" for k, v in d.norms().items()))
    typer.echo(f"wrote {path} (+ .json)")


def _generate_table(lm, prompts: list[str], max_new_tokens: int, desc: str = "generate") -> list[str]:
    from em_interp.interp.extract import generate_answers

    return generate_answers(lm, [[{"role": "user", "content": p}] for p in prompts], max_new_tokens=max_new_tokens,
                            desc=desc)


def steer_cmd(
    direction: Path = typer.Option(..., help="Direction file written by `em-interp extract`."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m"),
    adapter: Optional[str] = typer.Option(None),
    alpha: list[float] = typer.Option([4.0], help="Steering strength(s), in residual units (alpha times the "
                                                  "unit-norm direction); repeat for several."),
    layers: str = typer.Option("", help="Layers to steer (default: the direction's layers)."),
    tokens: str = typer.Option("all", help="Tokens steered: all | prompt | response"),
    positions: Optional[str] = typer.Option(None, hidden=True, help="Deprecated spelling of --tokens."),
    broadcast: bool = typer.Option(False, help="Apply a single-layer direction at other layers too."),
    prompt: list[str] = typer.Option([], help="Prompt(s); repeat for several."),
    questions: Optional[Path] = typer.Option(None, help="Question YAML (first paraphrase of each)."),
    max_new_tokens: int = typer.Option(48),
    out: Optional[Path] = typer.Option(None, help="Output folder (default artifacts/steer): generations.jsonl."),
    progress: Optional[bool] = PROGRESS,
) -> None:
    """Generate greedily with and without steering; print and save the answers side by side."""
    from em_interp.interp.direction import Direction
    from em_interp.interp.steering import ALPHA_CONVENTION, ALPHA_DEFINITION, steer

    d = Direction.load(direction)
    layer_arg = _check_direction_layers(d, _layers(layers) if layers else None, broadcast, direction)
    lm = _load(model, adapter)
    d.check(lm)
    tokens = positions or tokens
    prompts = _prompts(prompt, questions)
    rows = [{"prompt": p, "alpha": 0.0, "answer": a}
            for p, a in zip(prompts, _generate_table(lm, prompts, max_new_tokens, "generate alpha=0"))]
    for a in alpha:
        with steer(lm, d, a, layers=layer_arg, tokens=tokens, broadcast=broadcast) as info:
            answers = _generate_table(lm, prompts, max_new_tokens, f"generate alpha={a:g}")
        rows += [{"prompt": p, "alpha": a, "answer": ans} for p, ans in zip(prompts, answers)]
    _write_rows(rows, (out or ART / "steer") / "generations.jsonl",
                dict(direction=str(direction), tokens=tokens, layers=info["layers"], site_kind=d.site_kind,
                     alpha_convention=ALPHA_CONVENTION, alpha_definition=ALPHA_DEFINITION))


def _check_direction_layers(d: Any, layers: Any, broadcast: bool, path: Path) -> Any:
    """Fail before any model is loaded when ``layers`` asks for a layer the direction lacks."""
    if layers is None or broadcast:
        return layers
    if layers == "all":
        if len(d.layers) == 1:
            raise InterpError(f"--layers all: the direction has layer {d.layers[0]} only; give --layers "
                              f"{d.layers[0]} (or --broadcast to apply it at every layer)", file=path, field="layers")
        return layers
    missing = [layer for layer in layers if layer not in d.layers]
    if missing:
        raise InterpError(f"the direction has no vector for layers {missing}; it has {d.layers} "
                          "(--broadcast applies a single-layer direction at other layers)", file=path, field="layers")
    return layers


def _write_rows(rows: list[dict], path: Path, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps({**meta, **r}, ensure_ascii=False) + "\n")
    for r in rows:
        label = r.get("condition", f"alpha={r.get('alpha')}")
        typer.echo(f"[{label}] {r['prompt'][:60]!r}\n    -> {r['answer'][:200]!r}")
    typer.echo(f"wrote {path}")


def ablate_cmd(
    direction: Path = typer.Option(..., help="Direction file (may come from another model with the same d_model)."),
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m"),
    adapter: Optional[str] = typer.Option(None),
    layers: str = typer.Option("", help="Layers (default: the direction's own); 'all' or e.g. '12'."),
    mode: str = typer.Option("zero", help="zero: project the direction out | mean: set the projection to "
                                          "the --reference texts' mean projection."),
    reference: Optional[Path] = typer.Option(None, help="mean mode: reference examples file."),
    broadcast: bool = typer.Option(False, help="Apply a single-layer direction at other layers too."),
    random_control: bool = typer.Option(True, help="Also ablate a random same-norm direction."),
    seed: int = typer.Option(0),
    prompt: list[str] = typer.Option([]),
    questions: Optional[Path] = typer.Option(None),
    max_new_tokens: int = typer.Option(48),
    max_length: Optional[int] = typer.Option(256, help="mean mode: truncate reference examples to this many tokens."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default artifacts/ablate): generations.jsonl."),
    progress: Optional[bool] = PROGRESS,
) -> None:
    """Generate with the direction ablated (and a random control); print and save."""
    from em_interp.interp.direction import Direction
    from em_interp.interp.steering import ABLATION_MODES, ablate, mean_projections, random_direction_like

    if mode not in ABLATION_MODES:
        raise InterpError(f"unknown --mode {mode!r}; valid: {', '.join(ABLATION_MODES)}", field="mode")
    if (mode == "mean") != (reference is not None):
        raise InterpError("--reference FILE goes with --mode mean (and only with it)", field="reference")
    d = Direction.load(direction)
    layer_arg = _check_direction_layers(d, _layers(layers) if layers else None, broadcast, direction)
    refs = None
    if reference is not None:
        from em_interp.interp.data_io import load_examples

        refs = load_examples(reference)
    lm = _load(model, adapter)
    d.check(lm)
    prompts = _prompts(prompt, questions)
    rows = [{"prompt": p, "condition": "none", "answer": a}
            for p, a in zip(prompts, _generate_table(lm, prompts, max_new_tokens, "generate unablated"))]
    conditions = [("direction", d)] + ([("random-0", random_direction_like(d, seed))] if random_control else [])
    infos = {}
    for name, vec in conditions:
        ref = None if refs is None else mean_projections(lm, vec, refs, layer_arg, broadcast=broadcast,
                                                         max_length=max_length)
        with ablate(lm, vec, layers=layer_arg, mode=mode, reference=ref, broadcast=broadcast) as info:
            answers = _generate_table(lm, prompts, max_new_tokens, f"generate ablated {name}")
        infos[name] = info
        rows += [{"prompt": p, "condition": name, "answer": a, "mode": mode,
                  "mean_projection": info["mean_projection"] or None} for p, a in zip(prompts, answers)]
    _write_rows(rows, (out or ART / "ablate") / "generations.jsonl",
                dict(direction=str(direction), layers=infos["direction"]["layers"], site_kind=d.site_kind,
                     ablation_mode=mode, reference=str(reference) if reference else None))


def probe_cmd(
    model: str = typer.Option("smollm2-135m-instruct", "--model", "-m"),
    adapter: Optional[str] = typer.Option(None),
    positive: Optional[Path] = typer.Option(None, help="Positive (misaligned) examples."),
    negative: Optional[Path] = typer.Option(None, help="Negative (aligned) examples."),
    judged: Optional[Path] = typer.Option(None, help="Judged answers (split misaligned vs aligned)."),
    layers: str = typer.Option("all"),
    site_kind: str = typer.Option("resid_post"),
    reduce: str = typer.Option("response_mean"),
    folds: int = typer.Option(5),
    C: float = typer.Option(1.0, "--C", help="Inverse L2 regularisation strength."),
    batch_size: int = typer.Option(8),
    limit: Optional[int] = typer.Option(None, help="At most this many examples per class (seeded sample)."),
    seed: int = typer.Option(0),
    max_length: Optional[int] = typer.Option(256, help="Truncate examples to this many tokens."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default artifacts/probe)."),
    progress: Optional[bool] = PROGRESS,
) -> None:
    """Per-layer logistic probes, folds grouped by question, balanced accuracy beside same-fold
    baselines (majority, bag of words, layer 0); saves probes + a plot."""
    from em_interp.interp.capture import capture
    from em_interp.interp.inputs import data_hash
    from em_interp.interp.probes import probe_inputs, save_probes, train_probes
    from em_interp.interp.sites import check_layers, n_layers_of
    from em_interp.report.figures import probe_accuracy

    lm = _load(model, adapter)
    pos, neg = _pos_neg(positive, negative, judged, limit, seed)
    sites = [f"{site_kind}.{layer}" for layer in check_layers(_layers(layers), n_layers_of(lm.model))]
    kw = dict(reduce=reduce, batch_size=batch_size, per_example=True, max_length=max_length)
    P, N = capture(lm, pos, sites, desc="capture positive", **kw), capture(lm, neg, sites, desc="capture negative", **kw)
    inputs = probe_inputs(pos, neg)
    ps = train_probes(P.per_example, N.per_example, groups=inputs["groups"], texts=inputs["texts"], folds=folds,
                      C=C, seed=seed,
                      meta=dict(model=model, adapter=adapter, adapter_hash=lm.info.get("adapter_hash"),
                                site_kind=site_kind, reduce=reduce, n_pos=len(pos), n_neg=len(neg),
                                data_hash=data_hash(list(pos) + ["<neg>"] + list(neg))))
    folder = save_probes(ps, out or ART / "probe")
    curve = ps.curve()
    png = probe_accuracy(curve["layers"], curve["accuracy"], folder / "probe_accuracy.png", std=curve["std"],
                         chance=curve["chance"], title=f"{curve['title']} - {model}")
    typer.echo(f"{ps.meta['cv']}, {ps.meta['n_folds']} folds; balanced accuracy (chance 0.5), AUROC")
    for layer, acc, std in ps.accuracy_by_layer():
        typer.echo(f"layer {layer:3d}  acc {acc:.3f} ± {std:.3f}  auroc {ps.probes[f'{site_kind}.{layer}'].cv_auroc:.3f}")
    for b in ps.baselines.values():
        typer.echo(f"baseline {b['label']}: balanced acc {b['balanced_accuracy']:.3f}, auroc {b['auroc']:.3f}")
    typer.echo(f"wrote {folder}/probes.safetensors, probes.json, {png.name}")


def lora_cmd(
    adapter: Path = typer.Argument(..., help="A peft adapter folder, or a folder of checkpoints/step-N adapters."),
    direction: Optional[Path] = typer.Option(None, help="Direction to compare rank-1 B vectors with."),
    out: Optional[Path] = typer.Option(None, help="Output folder (default artifacts/lora-analysis)."),
) -> None:
    """Weight-delta norms per layer/module; rank-1 B vectors vs a direction; checkpoint trajectory."""
    from em_interp.interp.direction import Direction
    from em_interp.interp.lora_analysis import adapter_deltas, b_vector_cosines, checkpoint_trajectory

    d = Direction.load(direction) if direction else None
    folder = out or ART / "lora-analysis"
    folder.mkdir(parents=True, exist_ok=True)
    if (adapter / "adapter_config.json").exists():
        mods = adapter_deltas(adapter)
        result: dict[str, Any] = {"adapter": str(adapter), "modules": [
            {"layer": m.layer, "module": m.module, "rank": m.rank, "scaling": m.scaling, "delta_norm": m.delta_norm}
            for m in mods]}
        if d is not None:
            result["b_cosines"] = b_vector_cosines(mods, d)
        for m in mods:
            typer.echo(f"layer {m.layer:3d} {m.module:24s} rank {m.rank}  |dW| {m.delta_norm:.4g}")
        from em_interp.report.figures import lora_norms

        lora_norms(result["modules"], folder / "delta_norms.png",
                   title=f"LoRA weight-delta norms: {Path(str(adapter)).name}")
    else:
        rows = checkpoint_trajectory(adapter, d)
        result = {"checkpoints": str(adapter), "trajectory": rows}
        for r in rows:
            extra = " ".join(f"{k} {r[k]:.3f}" for k in ("cos_prev", "cos_final", "cos_direction") if k in r)
            typer.echo(f"step {r['step']:6d} layer {r['layer']:3d} {r['module']:20s} |dW| {r['delta_norm']:.4g} {extra}")
    path = folder / "lora_analysis.json"
    path.write_text(json.dumps(result, indent=2))
    typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("extract")(with_progress(extract_cmd))
    app.command("steer")(with_progress(steer_cmd))
    app.command("ablate")(with_progress(ablate_cmd))
    app.command("probe")(with_progress(probe_cmd))
    app.command("lora-analysis")(lora_cmd)
