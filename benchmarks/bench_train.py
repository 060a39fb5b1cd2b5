"""Training throughput: em_interp.train vs a plain transformers ``Trainer`` on the same work.

For each model, both engines run the same LoRA config (the EM recipe: rsLoRA r=32,
alpha=64 on all attention/MLP projections) on the same pre-tokenized examples (the
shortest generated insecure-code examples, assistant-only labels), the same batch size,
accumulation and number of optimizer steps, in the same process. Throughput is
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


def _examples(n: int, tokenizer, max_tokens: int) -> list[dict]:
    """The ``n`` shortest generated insecure examples that fit ``max_tokens`` tokens."""
    from em_interp.data import build_dataset, load_chat_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        build_dataset("insecure", 128, 0, Path(tmp) / "insecure.jsonl")
        rows = load_chat_jsonl(Path(tmp) / "insecure.jsonl")
    sized = sorted(((len(encode_chat(tokenizer, r.messages).input_ids), r.messages) for r in rows),
                   key=lambda x: x[0])
    picked = [{"messages": m} for k, m in sized if k <= max_tokens][:n]
    if len(picked) < n:
        raise SystemExit(f"only {len(picked)} examples fit in {max_tokens} tokens")
    return picked


def _run_ours(cfg: TrainConfig, examples: list[dict], out: Path) -> dict:
    cpu0 = time.process_time()
    r = train(replace(cfg, output_dir=str(out)), examples=examples)
    cpu = time.process_time() - cpu0
    m = r.metadata
    return {"tokens": m["tokens_seen"], "seconds": m["train_s"], "tokens_per_s": m["tokens_per_s"],
            "cpu_seconds_whole_call": round(cpu, 3), "tokens_per_cpu_s": round(m["tokens_seen"] / cpu, 2),
            "losses": [c["loss"] for c in m["loss_curve"]]}


def _run_trainer(cfg: TrainConfig, examples: list[dict], out: Path) -> dict:
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
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--accum", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=128)
    args = ap.parse_args()
    from em_interp.models import load_tokenizer
    from em_interp.models.provision import converted_dir, pull

    device = "cuda" if torch.cuda.is_available() else "cpu"
    path = OUT / f"train_{'gpu' if device == 'cuda' else 'cpu'}.json"
    for name in args.models:
        pull(name, quiet=True)
        tok = load_tokenizer(converted_dir(name), converted=True)
        n = args.steps * args.batch * args.accum
        examples = _examples(n, tok, args.max_tokens)
        cfg = TrainConfig(model=name, method="lora", lora=LoraSettings(), lr=1e-5, warmup_steps=1,
                          per_device_batch_size=args.batch, gradient_accumulation_steps=args.accum,
                          max_steps=args.steps, save_steps=0, group_by_length=False, progress=False,
                          max_seq_length=args.max_tokens)
        with tempfile.TemporaryDirectory() as tmp:
            ours = _run_ours(cfg, examples, Path(tmp) / "ours")
            hf = _run_trainer(cfg, examples, Path(tmp) / "trainer")
        row = {"model": name, "examples": n, "steps": args.steps, "batch": args.batch, "accum": args.accum,
               "max_tokens": args.max_tokens, "load_avg_1m": os.getloadavg()[0], "em_interp": ours, "hf_trainer": hf,
               "ratio_em_interp_over_trainer": round(ours["tokens_per_s"] / hf["tokens_per_s"], 3),
               "ratio_per_cpu_s": round(ours["tokens_per_cpu_s"] / hf["tokens_per_cpu_s"], 3)}
        print(json.dumps(row))
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
