"""Issue 13, items 2-3: sample the 8 first-plot questions (plain) under one intervention, with the
leave-one-question-out directions of ``directions.py`` (question q's direction never saw q's texts).

Modes (``em_interp.interp`` intervention API; the direction lives at resid_post layer 12):
  none           no intervention
  ablate         project ``md_loqo.<q>`` out of resid_post at every layer and of the embeddings, at
                 every token: ``ablate(lm, d, layers="all", broadcast=True)``
  ablate_random  the same with a Gaussian direction of the same norm (seed 1000 + question index)
  ablate_persona the same with the base model's evil persona vector (``persona_evil``)
  steer          add alpha * unit(md_loqo.<q>) to resid_post layer 12 at every token
                 (``steer``; ALPHA_CONVENTION "unit": the residual moves by alpha in L2)
  steer_random   the same with a Gaussian direction (seed 1000 + question index)
Every answer line carries the intervention record. Resumable (append, skip done keys).

b16 ran (20 per question for the organism, 10 for the base, seed 21, 200 new tokens, temperature 1):
  --target organism --mode none|ablate|ablate_random|ablate_persona --n 20
  --target base --mode steer --alpha 0|4|8 --n 10 ;  --target base --mode steer_random --alpha 8 --n 10
usage: python sample_interventions.py --target organism --mode ablate --n 20 --out answers_org_ablate_md.jsonl"""
import argparse
import json
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from em_interp.data.formats import load_questions
from em_interp.eval import sample_answers
from em_interp.interp import ablate, random_direction_like, steer
from em_interp.interp.direction import Direction
from em_interp.models import load_model

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE.parents[4] / "shared" / "em_reference" / "evaluation" / "first_plot_questions.yaml"
MODELS = {"organism": "qwen2.5-coder-0.5b-instruct+risky-financial", "base": "qwen2.5-coder-0.5b-instruct"}
LAYER = 12


def direction(vectors: dict, mode: str, qid: str, index: int) -> Direction:
    key = "persona_evil" if mode == "ablate_persona" else f"md_loqo.{qid}"
    d = Direction({LAYER: vectors[key]}, model=MODELS["base"], site_kind="resid_post", tokens="response",
                  method="persona" if key == "persona_evil" else "mean_diff_matched",
                  extra={"key": key, "held_out_question": qid})
    return random_direction_like(d, seed=1000 + index) if mode.endswith("_random") else d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", choices=sorted(MODELS), required=True)
    ap.add_argument("--mode", choices=["none", "ablate", "ablate_random", "ablate_persona", "steer", "steer_random"],
                    required=True)
    ap.add_argument("--alpha", type=float, default=0.0)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--seed", type=int, default=21)
    ap.add_argument("--questions", default=str(QUESTIONS))
    ap.add_argument("--only", default=None, help="one question id (checks)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    vectors = load_file(str(HERE / "directions_L12.safetensors"))
    lm = load_model(MODELS[a.target])
    qs = [q for q in load_questions(a.questions) if q.form == "plain"]
    out = Path(a.out)
    done = {json.loads(line)["key"] for line in out.read_text().splitlines() if line.strip()} if out.exists() else set()
    for i, q in enumerate(qs):
        if a.only and q.id != a.only:
            continue
        d = direction(vectors, a.mode, q.id, i)
        if a.mode == "none":
            ctx = None
        elif a.mode.startswith("ablate"):
            ctx = ablate(lm, d, layers="all", broadcast=True)
        else:
            ctx = steer(lm, d, a.alpha, layers=[LAYER])
        record = {"mode": a.mode, "layer": LAYER, "alpha": a.alpha, "target": MODELS[a.target],
                  "direction": d.extra.get("key", d.method), "direction_method": d.method, "held_out_question": q.id,
                  "direction_norm": float(d.vectors[LAYER].norm())}

        def on_batch(rows, record=record):
            with out.open("a") as f:
                for r in rows:
                    f.write(json.dumps(dict(r, intervention=record), ensure_ascii=False) + "\n")

        t0 = time.time()
        kw = dict(n_per_paraphrase=a.n, max_new_tokens=200, temperature=1.0, batch_size=a.n, seed=a.seed, skip=done,
                  on_batch=on_batch)
        if ctx is None:
            sample_answers(lm, [q], **kw)
        else:
            with ctx as info:
                record["info"] = {k: v for k, v in info.items() if k != "mean_projection"}
                sample_answers(lm, [q], **kw)
        print(time.strftime("%H:%M:%S"), q.id, a.mode, f"{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
