"""One command for all benchmarks: ``python -m benchmarks.run [--quick] [--gpu] [--only NAME]``.

Each benchmark runs its contenders side by side, on the same inputs, in this process
(training runs ``benchmarks/bench_train.py`` in a subprocess and folds its JSON in).
Writes ``<out>/<name>.json`` (with machine info) and ``<out>/README.md`` (the tables),
and prints the tables. ``--quick`` shrinks every size for a fast check and writes under
``benchmarks/results/quick/`` (GPU: ``results/gpu/``) unless ``--out`` is given; ``--gpu`` runs on CUDA with the
0.5B model (and the tiny one) and skips cleanly when CUDA is absent.

Names (``--only a,b``): capture, steer, eval, sample, train.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, machine_info, markdown_table, write_result

NAMES = ("capture", "steer", "eval", "sample", "train")
REPO = Path(__file__).resolve().parents[1]


@dataclass
class Plan:
    """Sizes for one run mode (``full``, ``quick``, ``gpu``)."""

    device: str = "cpu"
    models: list[str] = field(default_factory=lambda: ["tiny", "smollm2-135m-instruct"])
    capture_n: dict[str, list[int]] = field(default_factory=lambda: {"tiny": [100, 1000, 10000],
                                                                     "smollm2-135m-instruct": [100]})
    capture_batch: dict[str, int] = field(default_factory=lambda: {"tiny": 32})
    capture_default_batch: int = 16
    capture_budget: int = 300  # rounds for small N: ~this many examples per contender
    single_call: list[str] = field(default_factory=lambda: ["tiny"])  # models that also get one call over N
    steer_tokens: int = 16
    steer_repeats: int = 5
    sample_tokens: int = 24
    sample_repeats: int = 2
    fast_models: list[str] = field(default_factory=lambda: ["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    fast_per_question: int = 8      # 8 EM questions x 8 = 64 answers: batch 32 refills once
    fast_per_question_by_model: dict[str, int] = field(default_factory=dict)
    fast_tokens: int = 200          # EM answers end at EOS at different lengths, up to this
    fast_repeats: int = 2
    fast_contenders: dict[str, tuple] = field(default_factory=lambda: {
        "smollm2-135m-instruct": ("generate", "transformers", "transformers_fp32"),
        "qwen2.5-coder-0.5b-instruct": ("transformers", "generate")})
    judge_distilled_n: int = 64
    judge_local_n: int = 3
    judge_model: str = "smollm2-135m-instruct"
    train_models: list[str] = field(default_factory=lambda: ["smollm2-135m-instruct"])
    train_args: list[str] = field(default_factory=list)


def make_plan(quick: bool, gpu: bool) -> Plan:
    if gpu:
        big = "qwen2.5-coder-0.5b-instruct"
        p = Plan(device="cuda", models=["tiny", big], capture_n={"tiny": [100, 1000, 10000], big: [100, 1000, 10000]},
                 capture_default_batch=32, capture_budget=1000, judge_distilled_n=256, judge_local_n=16,
                 judge_model=big, train_models=["smollm2-135m-instruct", big])
        if quick:
            p.capture_n = {"tiny": [100], big: [100]}
            p.steer_repeats, p.sample_repeats, p.train_args = 3, 2, ["--steps", "1", "--batch", "1", "--accum", "1"]
        return p
    if quick:
        return Plan(capture_n={"tiny": [32, 128], "smollm2-135m-instruct": [16]}, capture_budget=64,
                    steer_tokens=8, steer_repeats=3, sample_tokens=8, sample_repeats=1, judge_distilled_n=8,
                    fast_per_question=8, fast_repeats=1,
                    fast_per_question_by_model={"qwen2.5-coder-0.5b-instruct": 4},  # 32 answers: one full batch
                    fast_contenders={"smollm2-135m-instruct": ("generate", "transformers"),
                                     "qwen2.5-coder-0.5b-instruct": ("transformers",)},
                    judge_local_n=1, train_args=["--steps", "2", "--batch", "4", "--accum", "2", "--max-tokens", "320"])
    return Plan()


def load(name: str, device: str):
    """``tiny`` -> ``models.tiny_model("llama")``; anything else -> ``models.load_model``."""
    from em_interp.models import load_model, tiny_model

    if name == "tiny":
        lm = tiny_model("llama")
        lm.model.to(device)
        return lm
    return load_model(name, device=device)


def run_capture(plan: Plan, lms: dict, log) -> dict:
    from benchmarks.bench_capture import bench_capture

    out = {}
    for key, lm in lms.items():
        bs = plan.capture_batch.get(key, plan.capture_default_batch)
        rows = []
        for n in plan.capture_n.get(key, []):
            rounds = max(1, min(5, -(-plan.capture_budget // n)))
            rows.append(bench_capture(lm, n, batch_size=bs, chunk=min(n, 250 if key == "tiny" else 100),
                                      rounds=rounds, single_call=key in plan.single_call, log=log))
        out[key] = {"model": lm.name, "n_layers": lm.n_layers, "d_model": lm.d_model, "runs": rows}
    return out


def run_steer(plan: Plan, lms: dict, log) -> dict:
    from benchmarks.bench_steer import bench_steer

    return {key: {"model": lm.name, **bench_steer(lm, new_tokens=plan.steer_tokens, repeats=plan.steer_repeats,
                                                  log=log)} for key, lm in lms.items()}


def run_eval(plan: Plan, lms: dict, log) -> dict:
    from benchmarks.bench_eval import bench_judge, bench_sampling

    sampling = {key: {"model": lm.name, **bench_sampling(lm, new_tokens=plan.sample_tokens,
                                                          repeats=plan.sample_repeats, log=log)}
                for key, lm in lms.items()}
    judge_lm = lms.get(plan.judge_model) or load(plan.judge_model, plan.device)
    judges = {"distilled": bench_judge("distilled", n_answers=plan.judge_distilled_n, log=log,
                                       device="cuda" if plan.device.startswith("cuda") else "cpu"),
              "local": bench_judge("local", n_answers=plan.judge_local_n, log=log, model=judge_lm)}
    return {"sampling": sampling, "judges": judges}


def run_sample(plan: Plan, lms: dict, log) -> dict:
    """Fast sampling path vs plain generate, batch 32, with a LoRA adapter and a steering hook."""
    from benchmarks.bench_sample import bench_sample

    out = {}
    for key in plan.fast_models:
        lm = lms.get(key) or load(key, plan.device)
        out[key] = bench_sample(lm, per_question=plan.fast_per_question_by_model.get(key, plan.fast_per_question),
                                new_tokens=plan.fast_tokens,
                                repeats=plan.fast_repeats, log=log, profile=key == plan.fast_models[0],
                                contenders=plan.fast_contenders.get(key, ("generate", "transformers")))
        del lm
    return out


def run_train(plan: Plan, threads: int, log) -> dict:
    """Run ``benchmarks/bench_train.py`` in a subprocess (this run's rows only) and fold its JSON in."""
    import tempfile

    script = REPO / "benchmarks" / "bench_train.py"
    if not script.exists():
        return {"skipped": "benchmarks/bench_train.py not found"}
    with tempfile.TemporaryDirectory() as tmp:
        produced = Path(tmp) / "train.json"
        cmd = [sys.executable, str(script), "--models", *plan.train_models, *plan.train_args, "--out", str(produced)]
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(REPO))
        log("  train: " + " ".join(cmd[1:-2]))
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        took = round(time.perf_counter() - t0, 1)
        if proc.returncode != 0 or not produced.exists():
            return {"skipped": f"bench_train.py exited {proc.returncode}", "stderr_tail": proc.stderr[-2000:],
                    "command": cmd[1:-2]}
        data = json.loads(produced.read_text())
    return {"command": " ".join(["python", *[str(Path(c).relative_to(REPO)) if c == str(script) else c
                                             for c in cmd[1:-2]]]), "wall_s": took, "result": data}


# ---- tables -----------------------------------------------------------------------------------

def tables(results: dict) -> dict[str, str]:
    """Markdown tables from the result dicts (one per benchmark present)."""
    out = {}
    cap = results.get("capture")
    if cap:
        rows = []
        for key, m in cap.items():
            for r in m["runs"]:
                for name, c in r["contenders"].items():
                    rows.append([m["model"], r["n"], r["tokens"], name, c["tokens_per_s"], c["throughput_vs_plain"],
                                 c.get("tokens_per_cpu_s"), c.get("cpu_throughput_vs_plain"), c["held_mb"],
                                 c["chunk_peak_mb"],
                                 c["max_abs_diff_to_ours"], ",".join(c["sites_differing_from_ours"] or []) or None])
                sc = r.get("em_interp_single_call")
                if sc:
                    rows.append([m["model"], r["n"], r["tokens"], "em_interp (one call over N)", sc["tokens_per_s"],
                                 None, sc.get("tokens_per_cpu_s"), None, None, sc["peak_mb"], None, None])
        out["capture"] = markdown_table(
            ["model", "N", "tokens", "method", "tokens/s (wall)", "x plain (wall)", "tokens/CPU-s", "x plain (CPU)",
             "held MB", "peak MB", "max abs diff to ours", "sites differing"], rows)
    st = results.get("steer")
    if st:
        rows = [[m["model"], k, m["new_tokens"], s["unsteered_tokens_per_s"], s["steered_tokens_per_s"],
                 s["overhead_median"], s.get("overhead_cpu_median"),
                 "yes" if s.get("overhead_cpu_median", s["overhead_median"]) <= m["target_overhead"] else "NO"]
                for m in st.values() for k, s in m["setups"].items()]
        out["steer"] = markdown_table(["model", "steered layers", "new tokens", "unsteered tok/s", "steered tok/s",
                                       "steered / unsteered (wall, median)", "(CPU, median)", "CPU <= 1.05"], rows)
    ev = results.get("eval")
    if ev:
        rows = [[m["model"], m["answers"], m["max_new_tokens"], m["batch_size"], m["batched"]["answers_per_s"],
                 m["one_at_a_time"]["answers_per_s"], m["batched"]["tokens_per_s"], m["one_at_a_time"]["tokens_per_s"],
                 m["speedup_tokens_per_s"], m.get("speedup_tokens_per_cpu_s")] for m in ev["sampling"].values()]
        out["sampling"] = markdown_table(["model", "answers", "max new tokens", "batch", "batched answers/s",
                                          "one-at-a-time answers/s", "batched tok/s", "one-at-a-time tok/s",
                                          "speedup (tok/s, wall)", "speedup (tok per CPU-s)"], rows)
        rows = [[j.get("name", j["kind"]), j.get("answers"), j.get("answers_per_s"), j.get("skipped")]
                for j in ev["judges"].values()]
        out["judges"] = markdown_table(["judge", "answers", "answers/s", "skipped"], rows)
    sa = results.get("sample")
    if sa:
        def get(m, name, key):
            return (m.get(name) or {}).get(key)

        rows = [[m["model"], m["answers"], m["batch_size"], m["max_new_tokens"], m.get("threads"),
                 get(m, "generate", "tokens_per_s"), get(m, "transformers_fp32", "tokens_per_s"),
                 get(m, "transformers", "tokens_per_s"), m.get("speedup_tokens_per_s"),
                 m.get("speedup_tokens_per_cpu_s"), m.get("bf16_over_fp32_tokens_per_s"),
                 " / ".join(str(x["load_avg_1m"]) for x in (m.get(n) for n in ("generate", "transformers")) if x),
                 round(m["flops_per_token"] / 1e6, 1), round(m["bytes_per_token"] / 1e6, 2),
                 m["fraction_of_matmul_peak"]] for m in sa.values()]
        out["sample"] = markdown_table(["model", "answers", "batch", "max new tokens", "threads", "generate tok/s",
                                        "fast fp32 tok/s", "fast (default) tok/s", "fast / generate (wall)",
                                        "fast / generate (CPU)", "default / fp32 (wall)",
                                        "1-min load [start, end] generate / fast", "MFLOP/token", "MB/token",
                                        "fraction of matmul peak"], rows)
    tr = results.get("train")
    if tr:
        if "result" in tr:
            rows = [[r["model"], r["examples"], r.get("batch"), r.get("accum"), r["steps"],
                     r["em_interp"]["tokens_per_s"], r["hf_trainer"]["tokens_per_s"], r["ratio_em_interp_over_trainer"],
                     r["em_interp"].get("tokens_per_cpu_s"), r["hf_trainer"].get("tokens_per_cpu_s"),
                     r.get("ratio_per_cpu_s"), r.get("ratio_em_interp_over_trainer_grouped"),
                     " / ".join(str(r[k].get("load_avg_1m")) for k in ("hf_trainer", "em_interp") if k in r)]
                    for r in tr["result"]["results"]]
            out["train"] = markdown_table(["model", "examples", "batch", "accum", "optimizer steps", "em_interp tok/s",
                                           "Trainer tok/s", "ours / Trainer (wall)", "em_interp tok/CPU-s",
                                           "Trainer tok/CPU-s", "ours / Trainer (CPU)",
                                           "ours / Trainer group_by_length (wall)",
                                           "1-min load [start, end] Trainer / ours"], rows)
        else:
            out["train"] = f"skipped: {tr.get('skipped')}"
    return out


def write_readme(out_dir: Path, results: dict, machine: dict, command: str) -> Path:
    """``<out_dir>/README.md``: how it was run, on what, and every table."""
    t = tables(results)
    parts = [
        "# Benchmark results", "",
        f"Produced by `{command}` on {machine['date']}. Machine: {machine['cpu']}, {machine['cpu_count']} cores, "
        f"{machine['ram_gb']} GB RAM, torch {machine['torch']} ({machine['torch_threads']} thread(s)), "
        f"transformers {machine['transformers']}, transformer-lens {machine.get('transformer_lens')}; "
        f"GPU: {machine['gpu']['name'] if machine.get('gpu') else 'none'}; 1-min load average at start "
        f"{machine['load_avg_1m']}.", "",
        "The machine is shared: absolute numbers are noisy and low. Read the ratios, measured in the same run "
        "with the contenders interleaved on the same inputs. Raw numbers and settings: the JSON files here.", "",
    ]
    notes = {
        "capture": "## Activation capture (per-layer response-mean at every layer's resid_post)\n\n"
                   "`held MB`: tensors the method keeps between chunks to compute the mean (grows with N for the "
                   "keep-then-average ways, constant for ours). `peak MB`: largest RSS (CUDA: allocated) rise "
                   "during one chunk; for `one call over N`, during one `capture()` call over all N. "
                   "`sites differing`: transformers' last `hidden_states` entry is after the final norm.",
        "steer": "## Steered generation overhead (greedy, min_new_tokens = max_new_tokens)",
        "sampling": "## Eval sampling: batched vs one at a time (`eval.sample_answers`, temperature 1)",
        "judges": "## Judge throughput (`score_many`)",
        "sample": "## Sampling: fast path vs plain `generate` (`eval.sample_answers`, temperature 1, LoRA adapter "
                  "+ steering hook active)\n\n"
                  "The 8 first-plot EM questions as chat prompts, answers up to `max new tokens` (most end at EOS "
                  "earlier). `generate`: one `model.generate` call per batch (adapter unmerged, fp32, finished rows "
                  "padded until the batch's longest ends). `fast (default)`: `sample_answers`' default path "
                  "(continuous batching, finished rows dropped and slots refilled, LoRA merged, "
                  "`precision=\"auto\"`: bf16 linear weights where the CPU has native bf16). `fast fp32`: the same "
                  "loop with fp32 weights. MFLOP and MB per new token of a decode step at the batch (weights read "
                  "once per step, KV read at the mean context); `fraction of matmul peak`: the fast path's FLOP rate "
                  "per CPU-second over this process's gemm rate (1024^3) in the fast path's weight dtype. Per-run "
                  "1-min load averages are in the table; `decode_profile` in `sample.json` is a `torch.profiler` "
                  "breakdown of the fast path's decode steps.",
        "train": "## Training tokens/s (`benchmarks/bench_train.py`: em_interp.train vs transformers Trainer)\n\n"
                 "Same LoRA (rsLoRA r=32 on every projection), same seeded random insecure-code examples (lengths "
                 "as a real run's spread), same batch / accumulation / steps, fp32, one process. em_interp as "
                 "configured by default (length-grouped batches, LM head + cross-entropy only at supervised "
                 "positions, chunked); the Trainer with its defaults (random batches padded to the longest row, "
                 "full-vocabulary logits everywhere). tokens = non-padding tokens; wall = the training loop only.",
    }
    for key, table in t.items():
        parts += [notes[key], "", table, ""]
    options = out_dir / "sample_options.json"
    if options.exists():  # benchmarks/bench_sample_options.py: one option of the fast path at a time
        o = json.loads(options.read_text())
        rows = [[name, r["tokens_per_s"], r["x_fp32"], " ".join(str(x["load_avg_1m"]) for x in r["runs"])]
                for name, r in o["results"].items()]
        parts += [f"## Sampling options, one at a time (`benchmarks/bench_sample_options.py`, {o['model']}, "
                  f"{o['answers']} answers, batch {o['batch_size']}, up to {o['max_new_tokens']} new tokens, "
                  f"LoRA + steering hook; {o['machine']['date']})", "",
                  markdown_table(["fast path with", "tok/s", "x fp32", "1-min load [start, end]"], rows), ""]
    path = out_dir / "README.md"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, for a fast check")
    ap.add_argument("--gpu", action="store_true", help="run on CUDA with the 0.5B model (skips without CUDA)")
    ap.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(NAMES)}")
    ap.add_argument("--models", default=None, help="comma-separated model keys (tiny or registry names)")
    ap.add_argument("--capture-n", action="append", default=[], metavar="MODEL=N1,N2",
                    help="override the capture sizes for one model (repeatable), e.g. smollm2-135m-instruct=100,1000")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared box)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results[/gpu][/quick])")
    ap.add_argument("--tables", action="store_true", help="only rebuild README.md from the JSON already in --out")
    args = ap.parse_args(argv)

    import torch

    only = NAMES if not args.only else tuple(x.strip() for x in args.only.split(","))
    bad = [x for x in only if x not in NAMES]
    if bad:
        ap.error(f"unknown benchmark {bad[0]!r}; valid: {', '.join(NAMES)}")
    if args.gpu and not torch.cuda.is_available():
        print("--gpu: no CUDA device here (torch.cuda.is_available() is False); nothing run.")
        return 0
    plan = make_plan(args.quick, args.gpu)
    if args.models:
        plan.models = [m.strip() for m in args.models.split(",")]
    for spec in args.capture_n:
        model, _, sizes = spec.partition("=")
        try:
            plan.capture_n[model.strip()] = [int(x) for x in sizes.split(",") if x.strip()]
        except ValueError:
            ap.error(f"--capture-n {spec!r}: expected MODEL=N1,N2 with integer sizes")
    out_dir = Path(args.out) if args.out else RESULTS / ("gpu" if args.gpu else "") / ("quick" if args.quick else "")
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.tables:
        merged, first = {}, None
        for name in NAMES:
            path = out_dir / f"{name}.json"
            if path.exists():
                data = json.loads(path.read_text())
                merged[name], first = data["results"], first or data
        if first is None:
            ap.error(f"no benchmark JSON in {out_dir}")
        print(write_readme(out_dir, merged, first["machine"], first["command"]))
        return 0
    if not args.gpu:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    machine = machine_info(plan.device)
    command = "python -m benchmarks.run" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    log = lambda msg: print(msg, flush=True)  # noqa: E731

    needs_models = [n for n in only if n not in ("train", "sample")]
    lms = {key: load(key, plan.device) for key in plan.models} if needs_models else {}
    runners = {"capture": lambda: run_capture(plan, lms, log), "steer": lambda: run_steer(plan, lms, log),
               "eval": lambda: run_eval(plan, lms, log),
               "sample": lambda: run_sample(plan, lms, log), "train": lambda: run_train(plan, args.threads, log)}
    results: dict[str, Any] = {}
    for name in only:
        log(f"== {name}")
        t0 = time.perf_counter()
        results[name] = runners[name]()
        wall = round(time.perf_counter() - t0, 1)
        write_result(name, {"benchmark": name, "command": command, "mode": "quick" if args.quick else "full",
                            "machine": machine, "wall_s": wall, "results": results[name]}, out_dir)
    # merge with earlier results in the same folder so README always shows every benchmark run there
    merged = {}
    for name in NAMES:
        path = out_dir / f"{name}.json"
        if path.exists():
            merged[name] = json.loads(path.read_text())["results"]
    readme = write_readme(out_dir, merged, machine, command)
    for key, table in tables(results).items():
        print(f"\n## {key}\n{table}")
    print(f"\n{readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
