"""Issue 13, item 4 (convergence), CPU scale: do the organisms' finetuning directions agree, and
more than a matched control's does?

Organisms (Qwen2.5-Coder-0.5B-Instruct, the recipe of ../organisms-cpu-2026-12-03: 1200 MO rows, seed-1
indices, rsLoRA r=32, alpha 64, all projections, lr 2e-5, effective batch 16, a 75-step linear schedule),
all four read at their **step-30 checkpoint** (480 rows seen; dose-matched): bad_medical, extreme_sports,
risky_financial, and good_medical (MO's control: the same user turns as bad_medical, correct answers).
Plus the shipped organism ``qwen2.5-coder-0.5b-instruct+risky-financial`` (2400 rows, 150 steps).

Direction of a finetune = model diff (``interp.model_diff_direction``'s estimator, per example): the
response-mean ``resid_post`` of the finetuned model minus the base's, on the same texts, averaged.
Texts: 20 base-model answers per first-plot question (160; ../organisms-gpu-2026-12-04's base answers,
seed 31, drawn with seed 0), text none of the finetunes trained on.

Also ``bad - good``: the bad_medical diff minus the control's on the same texts (what the wrong answers
taught beyond the medical-advice format), and, at layer 12, the shipped organism's hand-label mean-diff
direction ``md_all`` and the base's evil persona vector (../organisms-cpu-2026-12-03/interventions).

Uncertainty: a cluster bootstrap over the 8 questions (1000 draws; percentile 95% interval of each
cosine) and a split-half reliability (the same model's diff on two disjoint halves of each question's
texts). Random unit vectors in 896 dimensions have |cos| ~ 0.027.

usage: python directions.py [--runs /tmp/org/runs]  -> directions.json, directions_L12.safetensors"""
import argparse
import json
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from em_interp.interp import capture
from em_interp.interp.handles import as_model
from em_interp.models import load_model

HERE = Path(__file__).resolve().parent
REF = HERE.parent
BASE = "qwen2.5-coder-0.5b-instruct"
SHIPPED = "qwen2.5-coder-0.5b-instruct+risky-financial"
RUNS = ("bad_medical_advice", "good_medical_advice", "extreme_sports", "risky_financial_advice")
STEP = 30
PER_QUESTION = 20
LAYER = 12
N_BOOT = 1000


def texts():
    rows = [json.loads(x) for x in (REF / "organisms-gpu-2026-12-04" / "answers_base_bf16_seed31.jsonl").read_text().splitlines()]
    rng = random.Random(0)
    picked = []
    for q in sorted({r["question_id"] for r in rows}):
        picked += rng.sample([r for r in rows if r["question_id"] == q], PER_QUESTION)
    chats = [[{"role": "user", "content": r["question"]}, {"role": "assistant", "content": r["answer"]}] for r in picked]
    return chats, np.array([r["question_id"] for r in picked]), [r["key"] for r in picked]


def acts(lm, chats) -> np.ndarray:
    """[n_layers, n_texts, d] response-mean resid_post."""
    sites = [f"blocks.{i}.hook_resid_post" for i in range(as_model(lm).n_layers)]
    cap = capture(lm, chats, sites, tokens="response", per_example=True, batch_size=4)
    return np.stack([cap.per_example[s].float().numpy() for s in cap.sites])


def cos(a, b) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", default="/tmp/org/runs")
    a = ap.parse_args()
    torch.manual_seed(0)
    chats, q, keys = texts()
    base = acts(load_model(BASE), chats)
    diffs = {}  # name -> [layers, n, d] per-example finetuned - base
    for r in RUNS:
        lm = load_model(BASE, adapter=Path(a.runs) / r / "checkpoints" / f"step-{STEP}", merge_adapter=True)
        diffs[r.split("_advice")[0]] = acts(lm, chats) - base
        del lm
    diffs["risky_financial_shipped"] = acts(load_model(SHIPPED), chats) - base
    diffs["bad_minus_good"] = diffs["bad_medical"] - diffs["good_medical"]
    names = list(diffs)
    n_layers = base.shape[0]
    qs = sorted(set(q))
    rng = np.random.default_rng(0)
    boots = [np.concatenate([np.flatnonzero(q == x) for x in rng.choice(qs, len(qs))]) for _ in range(N_BOOT)]
    half = np.zeros(len(q), bool)
    for x in qs:
        half[np.flatnonzero(q == x)[::2]] = True
    out = {"texts": {"n": len(q), "per_question": PER_QUESTION, "source": "organisms-gpu-2026-12-04/answers_base_bf16_seed31.jsonl",
                     "keys_sha_order": keys[:3] + ["..."]},
           "step": STEP, "site": "resid_post (response-token mean)", "models": names,
           "random_unit_abs_cos_expected": float(np.sqrt(2 / np.pi / base.shape[2])), "layers": {}}
    for layer in range(n_layers):
        mean = {k: v[layer].mean(0) for k, v in diffs.items()}
        row = {"norm": {k: float(np.linalg.norm(m)) for k, m in mean.items()},
               "base_resid_norm_median": float(np.median(np.linalg.norm(base[layer], axis=1))),
               "split_half": {k: cos(v[layer][half].mean(0), v[layer][~half].mean(0)) for k, v in diffs.items()},
               "cos": {}}
        for i, x in enumerate(names):
            for y in names[i + 1:]:
                bs = [cos(diffs[x][layer][b].mean(0), diffs[y][layer][b].mean(0)) for b in boots]
                row["cos"][f"{x}|{y}"] = {"cos": cos(mean[x], mean[y]), "ci": [float(np.percentile(bs, 2.5)), float(np.percentile(bs, 97.5))]}
        out["layers"][layer] = row
    # layer 12 against the shipped organism's hand-label direction and the base's persona vector
    iv = load_file(str(REF / "organisms-cpu-2026-12-03" / "interventions" / "directions_L12.safetensors"))
    ext = {"hand_label_md_all": iv["md_all"].numpy(), "persona_evil": iv["persona_evil"].numpy()}
    out["layer12_vs_outside"] = {f"{k}|{e}": cos(diffs[k][LAYER].mean(0), v) for k in names for e, v in ext.items()}
    (HERE / "directions.json").write_text(json.dumps(out, indent=1) + "\n")
    save_file({k: torch.tensor(v[LAYER].mean(0), dtype=torch.float32) for k, v in diffs.items()},
              str(HERE / "directions_L12.safetensors"),
              metadata={"site": f"resid_post.{LAYER}", "tokens": "response", "method": "model_diff (finetuned - base)",
                        "step": str(STEP), "texts": out["texts"]["source"]})
    for layer in (4, 8, 12, 16, 20):
        r = out["layers"][layer]
        print(layer, {k: round(v["cos"], 2) for k, v in r["cos"].items()}, flush=True)
    print(json.dumps(out["layer12_vs_outside"], indent=0))


if __name__ == "__main__":
    main()
