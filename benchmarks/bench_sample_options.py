"""What each option of the fast sampling path buys, measured side by side (issue 17).

Same answers as ``bench_sample`` (the 8 EM questions, temperature 1, LoRA r=32 on every
projection + a steering hook, batch 32, up to 200 new tokens), through
``eval.sample_answers``' fast path, one option changed at a time, interleaved (the order
rotates every repeat), per-run 1-min load recorded:

- ``fp32``: the loop with the model's fp32 weights (``precision="model"``)
- ``bf16_plain``: bf16 linear weights, plain (unpacked) bf16 matmuls
- ``bf16_prepacked``: bf16 weights prepacked for oneDNN (the default on such CPUs)
- ``bf16_prepacked_2_threads``: the same with 2 torch threads

    PYTHONPATH=. .venv/bin/python benchmarks/bench_sample_options.py [--model NAME] [--answers-per-question 4]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

OPTIONS = ("fp32", "bf16_plain", "bf16_prepacked", "bf16_prepacked_2_threads")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--answers-per-question", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "quick" / "sample_options.json"))
    args = ap.parse_args()

    import em_interp.models.generate as gen
    from benchmarks.bench_eval import questions
    from benchmarks.bench_sample import with_lora_and_hook
    from benchmarks.common import machine_info, median
    from em_interp.eval import sample_answers
    from em_interp.models import load_model

    torch.set_num_threads(1)
    machine = machine_info()
    lm = load_model(args.model)
    adapted, handle = with_lora_and_hook(lm)
    qs = questions(8)
    pack = gen._pack
    runs: dict[str, list] = {k: [] for k in OPTIONS}
    try:
        for r in range(args.repeats):
            for name in OPTIONS[r % len(OPTIONS):] + OPTIONS[:r % len(OPTIONS)]:
                gen._pack = (lambda w: None) if name == "bf16_plain" else pack
                torch.set_num_threads(2 if name.endswith("2_threads") else 1)
                load0 = os.getloadavg()[0]
                t0, c0 = time.perf_counter(), time.process_time()
                rows = sample_answers(adapted, qs, n_per_paraphrase=args.answers_per_question,
                                      max_new_tokens=args.new_tokens, temperature=1.0, batch_size=32, seed=0,
                                      precision="model" if name == "fp32" else "bf16")
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
                tokens = sum(x["n_tokens"] for x in rows)
                runs[name].append({"tokens": tokens, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                                   "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]})
                print(name, runs[name][-1], f"{tokens / wall:.1f} tok/s", flush=True)
    finally:
        gen._pack = pack
        torch.set_num_threads(1)
        handle.remove()
    result = {}
    for name, xs in runs.items():
        tokens, wall = median([x["tokens"] for x in xs]), median([x["wall_s"] for x in xs])
        result[name] = {"tokens_per_s": round(tokens / wall, 1), "runs": xs}
    base = result["fp32"]["tokens_per_s"]
    for name in OPTIONS:
        result[name]["x_fp32"] = round(result[name]["tokens_per_s"] / base, 3)
    payload = {"benchmark": "sample_options", "model": lm.name, "answers": 8 * args.answers_per_question,
               "batch_size": 32, "max_new_tokens": args.new_tokens, "temperature": 1.0,
               "adapter": "random LoRA r=32, all projections", "hook": f"steer resid at layer {lm.n_layers // 2}",
               "machine": machine, "results": result}
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
    print(json.dumps({k: (v["tokens_per_s"], v["x_fp32"]) for k, v in result.items()}))


if __name__ == "__main__":
    main()
