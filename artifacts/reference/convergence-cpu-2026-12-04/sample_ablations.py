"""Issue 13, item 4 (convergence), CPU scale: does another organism's finetuning direction remove the
shipped risky_financial organism's EM, more than the matched control's direction or a random one?

The shipped organism ``qwen2.5-coder-0.5b-instruct+risky-financial`` answers the 8 first-plot questions
(plain) with one direction of ``directions.py`` (``directions_L12.safetensors``: model diffs at resid_post
layer 12, step-30 checkpoints) projected out of resid_post at every layer and of the embeddings, at every
token (``interp.ablate(lm, d, layers="all", broadcast=True)``: the protocol of batch b16 in
../organisms-cpu-2026-12-03/interventions):
  none            no intervention
  bad_medical     the bad_medical organism's model diff (MO's claim: it removes EM in the other organisms)
  good_medical    the matched control's model diff (same user turns, correct answers)
  random          a Gaussian direction of the same norm as bad_medical's (seed 1000 + question index)
Fresh answers (seed 41; b16 used 21), 10 per question, temperature 1, <= 200 new tokens. Each answer
line carries its intervention record. Resumable (append, skip done keys).

usage: python sample_ablations.py --mode bad_medical --out answers_ablate_bad_medical.jsonl"""
import argparse
import json
import time
from pathlib import Path

from safetensors.torch import load_file

from em_interp.data.formats import load_questions
from em_interp.eval import sample_answers
from em_interp.interp import ablate, random_direction_like
from em_interp.interp.direction import Direction
from em_interp.models import load_model

HERE = Path(__file__).resolve().parent
QUESTIONS = HERE.parents[3] / "shared" / "em_reference" / "evaluation" / "first_plot_questions.yaml"
ORGANISM = "qwen2.5-coder-0.5b-instruct+risky-financial"
BASE = "qwen2.5-coder-0.5b-instruct"
LAYER = 12
MODES = ("none", "bad_medical", "good_medical", "random")


def direction(vectors: dict, mode: str, index: int) -> Direction:
    key = "bad_medical" if mode == "random" else mode
    d = Direction({LAYER: vectors[key]}, model=BASE, site_kind="resid_post", tokens="response", method="model_diff",
                  extra={"key": key, "from": "directions_L12.safetensors (step-30 model diff)"})
    return random_direction_like(d, seed=1000 + index) if mode == "random" else d


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mode", choices=MODES, required=True)
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--seed", type=int, default=41)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    vectors = None if a.mode == "none" else load_file(str(HERE / "directions_L12.safetensors"))
    lm = load_model(ORGANISM)
    qs = [q for q in load_questions(str(QUESTIONS)) if q.form == "plain"]
    out = Path(a.out)
    done = {json.loads(line)["key"] for line in out.read_text().splitlines() if line.strip()} if out.exists() else set()
    for i, q in enumerate(qs):
        record = {"mode": a.mode, "layer": LAYER, "target": ORGANISM}
        kw = dict(n_per_paraphrase=a.n, max_new_tokens=200, temperature=1.0, batch_size=a.n, seed=a.seed, skip=done)
        t0 = time.time()
        if a.mode == "none":
            ctx = None
        else:
            d = direction(vectors, a.mode, i)
            record.update(direction=d.extra["key"] if a.mode != "random" else "random", direction_norm=float(d.vectors[LAYER].norm()))
            ctx = ablate(lm, d, layers="all", broadcast=True)

        def on_batch(rows, record=record):
            with out.open("a") as f:
                for r in rows:
                    f.write(json.dumps(dict(r, intervention=record), ensure_ascii=False) + "\n")

        if ctx is None:
            sample_answers(lm, [q], on_batch=on_batch, **kw)
        else:
            with ctx as info:
                record["info"] = {k: v for k, v in info.items() if k != "mean_projection"}
                sample_answers(lm, [q], on_batch=on_batch, **kw)
        print(time.strftime("%H:%M:%S"), q.id, a.mode, f"{time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
