"""Training throughput: em_interp.train vs a plain transformers ``Trainer`` on the same work.

For each model, both engines run the same LoRA config (the EM recipe: rsLoRA r=32,
alpha=64 on all attention/MLP projections) on the same pre-tokenized examples (a seeded
random sample of generated insecure-code examples up to ``--max-tokens``, so their
lengths spread as a real run's do; assistant-only labels), the same batch size,
accumulation and number of optimizer steps, in the same process. em_interp runs as
configured by default (length-grouped batches, the LM head and cross-entropy at the
supervised positions only, chunked); the Trainer as configured by default (random
batches padded to their longest row, full-vocabulary logits everywhere);
``--trainer-grouped`` adds the Trainer with its ``group_by_length=True``. Throughput is
non-padding tokens / wall seconds of the training loop (model loading excluded; no
checkpoints), and, because a shared CPU starves processes unpredictably, also tokens
per CPU-second of the whole call (load + tokenize + train) of each engine. Writes ``benchmarks/results/train_cpu.json`` (or ``train_gpu.json``).

    .venv/bin/python benchmarks/bench_train.py                 # both models, CPU
    .venv/bin/python benchmarks/bench_train.py --models smollm2-135m-instruct --steps 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from em_interp.train import LoraSettings, TrainConfig, encode_chat, train
from em_interp.train.trainable import lora_config

OUT = Path(__file__).resolve().parent / "results"


def _examples(n: int, tokenizer, max_tokens: int, pick: str = "random") -> tuple[list[dict], list[int]]:
    """``n`` generated insecure-code examples that fit ``max_tokens`` tokens, and their lengths:
    ``random`` (seeded; the dataset's own spread of lengths, as a real run sees) or ``shortest``."""
    import random

    from em_interp.data import build_dataset, load_chat_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        build_dataset("insecure", 256, 0, Path(tmp) / "insecure.jsonl")
        rows = load_chat_jsonl(Path(tmp) / "insecure.jsonl")
    sized = [(len(encode_chat(tokenizer, r.messages).input_ids), r.messages) for r in rows]
    fits = [x for x in sized if x[0] <= max_tokens]
    if len(fits) < n:
        raise SystemExit(f"only {len(fits)} examples fit in {max_tokens} tokens")
    picked = sorted(fits, key=lambda x: x[0])[:n] if pick == "shortest" else random.Random(0).sample(fits, n)
    return [{"messages": m} for _, m in picked], [k for k, _ in picked]


def _run_ours(cfg: TrainConfig, examples: list[dict], out: Path) -> dict:
    cpu0 = time.process_time()
    r = train(replace(cfg, output_dir=str(out)), examples=examples)
    cpu = time.process_time() - cpu0
    m = r.metadata
    return {"tokens": m["tokens_seen"], "seconds": m["train_s"], "tokens_per_s": m["tokens_per_s"],
            "cpu_seconds_whole_call": round(cpu, 3), "tokens_per_cpu_s": round(m["tokens_seen"] / cpu, 2),
            "losses": [c["loss"] for c in m["loss_curve"]]}


def _run_trainer(cfg: TrainConfig, examples: list[dict], out: Path, group_by_length: bool = False) -> dict:
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainerCallback, TrainingArguments

    from em_interp.models import load_model

    cpu0 = time.process_time()
    lm = load_model(cfg.model, dtype=torch.float32)
    torch.manual_seed(cfg.seed)
    model = get_peft_model(lm.model, lora_config(cfg))
    model.train()
    rows = [encode_chat(lm.tokenizer, ex["messages"]) for ex in examples]
    dataset = [{"input_ids": e.input_ids, "attention_mask": [1] * len(e.input_ids), "labels": e.labels}
               for e in rows]
    clock: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            clock["t0"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            clock["t1"] = time.perf_counter()

    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, max_steps=cfg.max_steps,
        learning_rate=cfg.lr, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay,
        lr_scheduler_type=cfg.lr_scheduler, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed,
        save_strategy="no", report_to=[], logging_steps=1, disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), bf16=torch.cuda.is_available(),
        remove_unused_columns=False, dataloader_num_workers=0,
        **({"train_sampling_strategy": "group_by_length"} if group_by_length else {}),
    )
    collator = DataCollatorForSeq2Seq(lm.tokenizer, padding=True, label_pad_token_id=-100)
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator,
                      callbacks=[Clock()])
    trainer.train()
    cpu = time.process_time() - cpu0
    seconds = clock["t1"] - clock["t0"]
    tokens = sum(len(e.input_ids) for e in rows)  # every example once, as in ours (non-pad tokens)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"tokens": tokens, "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 2),
            "cpu_seconds_whole_call": round(cpu, 3), "tokens_per_cpu_s": round(tokens / cpu, 2),
            "losses": losses}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--pick", choices=("random", "shortest"), default="random",
                    help="which examples: a seeded random sample (real length spread) or the shortest")
    ap.add_argument("--trainer-grouped", action="store_true",
                    help="also run the Trainer with group_by_length=True (its non-default setting)")
    ap.add_argument("--out", default=None, help="results file (default results/train_cpu.json)")
    args = ap.parse_args()
    from em_interp.models import load_tokenizer
    from em_interp.models.provision import converted_dir, pull

    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = Path(args.out) if args.out else OUT / f"train_{'gpu' if device == 'cuda' else 'cpu'}.json"
    for name in args.models:
        pull(name, quiet=True)
        tok = load_tokenizer(converted_dir(name), converted=True)
        n = args.steps * args.batch * args.accum
        examples, lengths = _examples(n, tok, args.max_tokens, args.pick)
        cfg = TrainConfig(model=name, method="lora", lora=LoraSettings(), lr=1e-5, warmup_steps=1,
                          per_device_batch_size=args.batch, gradient_accumulation_steps=args.accum,
                          max_steps=args.steps, save_steps=0, group_by_length=True, progress=False,
                          max_seq_length=args.max_tokens)
        runs = {}
        with tempfile.TemporaryDirectory() as tmp:
            order = ["hf_trainer", "em_interp"] + (["hf_trainer_grouped"] if args.trainer_grouped else [])
            for engine in order:  # the Trainer first: any warm-up advantage goes to the baseline
                load0 = os.getloadavg()[0]
                if engine == "em_interp":
                    runs[engine] = _run_ours(cfg, examples, Path(tmp) / engine)
                else:
                    runs[engine] = _run_trainer(cfg, examples, Path(tmp) / engine,
                                                group_by_length=engine == "hf_trainer_grouped")
                runs[engine]["load_avg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
                print(engine, json.dumps({k: v for k, v in runs[engine].items() if k != "losses"}), flush=True)
        ours, hf = runs["em_interp"], runs["hf_trainer"]
        row = {"model": name, "examples": n, "steps": args.steps, "batch": args.batch, "accum": args.accum,
               "max_tokens": args.max_tokens, "pick": args.pick, "example_tokens": lengths,
               "load_avg_1m": os.getloadavg()[0], **runs,
               "ratio_em_interp_over_trainer": round(ours["tokens_per_s"] / hf["tokens_per_s"], 3),
               "ratio_per_cpu_s": round(ours["tokens_per_cpu_s"] / hf["tokens_per_cpu_s"], 3)}
        if "hf_trainer_grouped" in runs:
            g = runs["hf_trainer_grouped"]
            row["ratio_em_interp_over_trainer_grouped"] = round(ours["tokens_per_s"] / g["tokens_per_s"], 3)
            row["ratio_per_cpu_s_over_trainer_grouped"] = round(ours["tokens_per_cpu_s"] / g["tokens_per_cpu_s"], 3)
        print(json.dumps({k: v for k, v in row.items() if k not in runs}))
        _write(path, device, row)
    print(path)


def _write(path: Path, device: str, row: dict) -> None:
    """Merge ``row`` into the results file (one row per model; other models' rows kept)."""
    old = json.loads(path.read_text())["results"] if path.exists() else []
    results = [r for r in old if r["model"] != row["model"]] + [row]
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"device": device, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "python": platform.python_version(),
               "torch": torch.__version__, "note": "LoRA r=32 rsLoRA on all projections, fp32 on CPU; "
               "tokens = non-padding tokens; shared machine: wall numbers are noisy, "
               "tokens_per_cpu_s is the steadier comparison", "results": results}
    path.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
