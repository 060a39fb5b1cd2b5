"""Sampling throughput: the fast path (``models.generate.decode``) vs plain ``model.generate``.

Both go through ``eval.sample_answers`` on the same questions, seed, temperature 1 and
``max_new_tokens``, with a LoRA adapter (random, nonzero, rank 32 on every projection)
and a steering hook (a forward hook adding a fixed vector at the middle decoder layer)
active: ``backend="generate"`` (one ``model.generate`` per batch, adapter unmerged) vs
``backend="transformers"`` (continuous batching, slot KV cache, adapter merged for the
call). The two alternate and medians are reported: new tokens/s (wall) and new tokens
per CPU-second of the process (steadier on a shared machine), and their ratios.

The arithmetic limit: FLOPs per new token (2 x linear weights incl. the LM head, plus
attention over the mean context) and bytes per new token (weights read once per step /
batch, plus the KV cache read), against this process's measured fp32 matmul rate
(``sgemm_gflops_per_cpu_s``); ``fraction_of_matmul_peak`` is the fast path's FLOP rate
per CPU-second over it.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from benchmarks.bench_eval import questions
from benchmarks.common import median


def with_lora_and_hook(lm: Any, r: int = 32, seed: int = 0) -> tuple[Any, Any]:
    """(a LoadedModel copy with a random nonzero LoRA on every projection, the hook handle)."""
    from peft import LoraConfig, get_peft_model

    from em_interp.models import LoadedModel

    torch.manual_seed(seed)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    cfg = LoraConfig(r=r, lora_alpha=2 * r, use_rslora=True, target_modules=targets, init_lora_weights=False)
    model = get_peft_model(copy.deepcopy(lm.model), cfg).eval()
    for name, p in model.named_parameters():  # small deltas: a finetune-sized change, not noise
        if "lora_B" in name:
            p.data.mul_(0.01)
    vector = torch.randn(lm.d_model) * 2.0
    layer = model.get_base_model().model.layers[lm.n_layers // 2]

    def steer(module, args, output):
        return (output[0] + vector,) + tuple(output[1:]) if isinstance(output, tuple) else output + vector

    handle = layer.register_forward_hook(steer)
    return LoadedModel(model=model, tokenizer=lm.tokenizer, name=lm.name, path=lm.path, adapter="random-lora"), handle


def sgemm_rate(n: int = 1024, repeats: int = 5) -> float:
    """fp32 matmul GFLOP per CPU-second of this process (all its threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    c0 = time.process_time()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.process_time() - c0) / 1e9


def arithmetic(lm: Any, batch_size: int, mean_context: float) -> dict:
    """FLOPs and bytes per new token of one decode step at ``batch_size`` rows."""
    cfg = lm.config
    linear = sum(m.weight.numel() for n, m in lm.model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lora_" not in n)
    n_kv = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn_flops = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * mean_context
    kv_bytes = 2 * cfg.num_hidden_layers * n_kv * head_dim * mean_context * 4
    return {"linear_params": linear, "flops_per_token": 2 * linear + attn_flops,
            "bytes_per_token": 4 * linear / batch_size + kv_bytes}


def bench_sample(lm: Any, *, n_questions: int = 8, per_question: int = 4, batch_size: int = 32,
                 new_tokens: int = 32, repeats: int = 2, log=print) -> dict:
    """Fast vs plain sampling of the same answers with a LoRA adapter and a steering hook active."""
    from em_interp.eval import sample_answers

    qs = questions(n_questions)
    adapted, handle = with_lora_and_hook(lm)
    try:
        def run(backend: str) -> tuple[float, float, int, float]:
            t0, c0 = time.perf_counter(), time.process_time()
            rows = sample_answers(adapted, qs, n_per_paraphrase=per_question, max_new_tokens=new_tokens,
                                  temperature=1.0, batch_size=batch_size, seed=0, backend=backend)
            ctx = sum(r["n_tokens"] for r in rows) / 2 / max(len(rows), 1)
            return time.perf_counter() - t0, time.process_time() - c0, sum(r["n_tokens"] for r in rows), ctx

        times: dict[str, list] = {"generate": [], "transformers": []}
        for r in range(repeats):
            for backend in (["generate", "transformers"] if r % 2 == 0 else ["transformers", "generate"]):
                times[backend].append(run(backend))
    finally:
        handle.remove()
    out: dict[str, Any] = {"model": lm.name, "answers": n_questions * per_question, "batch_size": batch_size,
                           "max_new_tokens": new_tokens, "repeats": repeats, "adapter": "random LoRA r=32, all",
                           "hook": f"steer resid at layer {lm.n_layers // 2}"}
    for backend, runs in times.items():
        wall, cpu, tokens = median([x[0] for x in runs]), median([x[1] for x in runs]), median([x[2] for x in runs])
        out[backend] = {"tokens": int(tokens), "seconds_median": round(wall, 3), "cpu_s_median": round(cpu, 3),
                        "tokens_per_s": round(tokens / wall, 2), "tokens_per_cpu_s": round(tokens / cpu, 2)}
    fast, plain = out["transformers"], out["generate"]
    out["speedup_tokens_per_s"] = round(fast["tokens_per_s"] / plain["tokens_per_s"], 3)
    out["speedup_tokens_per_cpu_s"] = round(fast["tokens_per_cpu_s"] / plain["tokens_per_cpu_s"], 3)
    prompt_len = 60  # about the chat-templated question length
    limit = arithmetic(adapted, batch_size, prompt_len + new_tokens / 2)
    peak = sgemm_rate()
    out.update(limit, sgemm_gflops_per_cpu_s=round(peak, 2),
               fast_gflops_per_cpu_s=round(fast["tokens_per_cpu_s"] * limit["flops_per_token"] / 1e9, 2))
    out["fraction_of_matmul_peak"] = round(out["fast_gflops_per_cpu_s"] / peak, 3)
    log(f"  sample {lm.name}: fast {fast['tokens_per_s']} tok/s vs generate {plain['tokens_per_s']} "
        f"(x{out['speedup_tokens_per_s']} wall, x{out['speedup_tokens_per_cpu_s']} per CPU-s), "
        f"{out['fraction_of_matmul_peak']:.0%} of the matmul rate")
    return out
