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
batch, plus the KV cache read), against this process's measured matmul rate in the fast
path's weight dtype (``gemm_gflops_per_cpu_s``: fp32 and bf16 at 1024^3 and at a decode
shape, plain and oneDNN-prepacked); ``fraction_of_matmul_peak`` is the fast path's FLOP
rate per CPU-second over the 1024^3 rate. ``decode_profile``: a ``torch.profiler``
breakdown of the fast path's decode steps (where the time goes).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from benchmarks.bench_eval import QUESTIONS, questions
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


def gemm_rates(repeats: int = 5) -> dict:
    """This process's matmul rate, GFLOP per CPU-second (all its threads), fp32 and bf16:
    a 1024^3 product (the peak) and a decode-step shape (32 rows x 576 x 1536)."""
    out = {}
    for dtype, tag in ((torch.float32, "fp32"), (torch.bfloat16, "bf16")):
        for (m, k, n), shape in (((1024, 1024, 1024), "1024^3"), ((32, 576, 1536), "32x576x1536")):
            a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
            a @ b
            c0 = time.process_time()
            reps = repeats if m == 1024 else repeats * 40
            for _ in range(reps):
                a @ b
            out[f"{tag}_{shape}"] = round(2 * m * k * n * reps / max(time.process_time() - c0, 1e-9) / 1e9, 1)
    from em_interp.models.generate import _pack

    x, w = torch.randn(32, 576).bfloat16(), torch.randn(1536, 576).bfloat16()
    packed = _pack(w)
    if packed is not None:  # what the fast path's linears run: oneDNN-prepacked bf16 weights
        torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        c0 = time.process_time()
        for _ in range(repeats * 40):
            torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        out["bf16_prepacked_32x576x1536"] = round(2 * 32 * 576 * 1536 * repeats * 40 / max(
            time.process_time() - c0, 1e-9) / 1e9, 1)
    return out


def sgemm_rate(n: int = 1024, repeats: int = 5) -> float:
    """fp32 matmul GFLOP per CPU-second of this process (all its threads)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    c0 = time.process_time()
    for _ in range(repeats):
        a @ b
    return 2 * n ** 3 * repeats / (time.process_time() - c0) / 1e9


def arithmetic(lm: Any, batch_size: float, mean_context: float, weight_bytes: int = 4) -> dict:
    """FLOPs and bytes per new token of one decode step at ``batch_size`` live rows.

    FLOPs: 2 per linear weight (LoRA merged: the base shapes; the LM head included) plus
    attention (4 x layers x heads x head_dim x context). Bytes: every linear weight read
    once per step, shared by the live rows, plus this row's K and V (fp32) at its context."""
    cfg = lm.config
    linear = sum(m.weight.numel() for n, m in lm.model.named_modules()
                 if isinstance(m, torch.nn.Linear) and "lora_" not in n)
    n_kv = getattr(cfg, "num_key_value_heads", cfg.num_attention_heads)
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    attn_flops = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * head_dim * mean_context
    kv_bytes = 2 * cfg.num_hidden_layers * n_kv * head_dim * mean_context * 4
    return {"linear_params": linear, "flops_per_token": round(2 * linear + attn_flops),
            "bytes_per_token": round(weight_bytes * linear / batch_size + kv_bytes)}


def profile_step(lm: Any, batch_size: int = 32, steps: int = 40, precision: str = "auto") -> dict:
    """Where a decode step's time goes: ``torch.profiler`` self-CPU time of the fast loop over
    ``steps + 1`` new tokens minus that over 1 (prefill and setup cancel), per decode step,
    for ``batch_size`` rows, by operator."""
    from torch.profiler import ProfilerActivity, profile

    from em_interp.models.generate import decode, render_prompts

    convs = [[{"role": "user", "content": q}] for _, q in QUESTIONS] * (batch_size // len(QUESTIONS) + 1)
    prompts = render_prompts(lm.tokenizer, convs[:batch_size])
    kw = dict(temperature=1.0, stop=[], seeds=list(range(batch_size)), batch_size=batch_size, pad_id=0,
              precision=precision)
    decode(lm.model, prompts, max_new_tokens=2, **kw)
    ops: dict[str, list[float]] = {}
    for n, sign in ((1, -1), (steps + 1, 1)):
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            decode(lm.model, prompts, max_new_tokens=n, **kw)
        for e in prof.key_averages():
            acc = ops.setdefault(e.key, [0.0, 0.0])
            acc[0] += sign * e.self_cpu_time_total / 1e3 / steps
            acc[1] += sign * e.count / steps
    total = sum(v[0] for v in ops.values()) or 1.0
    groups = {"linear (bf16 prepacked / mm / addmm)": ("mkldnn::_linear_pointwise", "aten::mm", "aten::addmm"),
              "attention (sdpa)": ("aten::_scaled_dot_product_flash_attention_for_cpu", "aten::bmm"),
              "KV cache writes (index_put)": ("aten::_index_put_impl_",),
              "dtype casts / copies": ("aten::copy_", "aten::_to_copy"),
              "sampling (softmax/cumsum/searchsorted)": ("aten::_softmax", "aten::cumsum_", "aten::searchsorted")}
    share = {g: round(sum(ops.get(k, [0.0])[0] for k in keys) / total, 3) for g, keys in groups.items()}
    share["everything else (norms, rotary, residual adds, hooks, Python)"] = round(1 - sum(share.values()), 3)
    top = sorted(ops.items(), key=lambda kv: -kv[1][0])[:10]
    return {"batch_size": batch_size, "decode_steps": steps, "precision": precision,
            "self_cpu_ms_per_decode_step": round(total, 1), "share": share,
            "top_ops": [{"op": k, "ms_per_step": round(v[0], 2), "calls_per_step": round(v[1], 1)} for k, v in top]}


CONTENDERS = {
    "generate": dict(backend="generate"),
    "transformers": dict(backend="transformers", precision="auto"),
    "transformers_fp32": dict(backend="transformers", precision="model"),
}


def bench_sample(lm: Any, *, n_questions: int = 8, per_question: int = 4, batch_size: int = 32,
                 new_tokens: int = 200, repeats: int = 1, contenders: tuple[str, ...] = ("generate", "transformers"),
                 profile: bool = False, log=print) -> dict:
    """Fast vs plain sampling of the same answers with a LoRA adapter and a steering hook active.

    ``contenders``: ``generate`` (plain ``model.generate`` per batch, adapter unmerged, the
    model's dtype), ``transformers`` (the default fast path: continuous batching, adapter
    merged, ``precision="auto"``: bf16 linears where the CPU has native bf16) and
    ``transformers_fp32`` (the same loop with the model's fp32 weights). They alternate
    (the order rotates every repeat); per-run 1-min load averages are recorded."""
    import os

    from em_interp.eval import sample_answers
    from em_interp.models.generate import linear_dtype, render_prompts

    qs = questions(n_questions)
    adapted, handle = with_lora_and_hook(lm)
    prompt_lens = [len(p) for p in render_prompts(lm.tokenizer, [q.messages(0) for q in qs])]
    try:
        def run(name: str) -> dict:
            load0 = os.getloadavg()[0]
            t0, c0 = time.perf_counter(), time.process_time()
            rows = sample_answers(adapted, qs, n_per_paraphrase=per_question, max_new_tokens=new_tokens,
                                  temperature=1.0, batch_size=batch_size, seed=0, **CONTENDERS[name])
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            lens = [r["n_tokens"] for r in rows]
            return {"wall": wall, "cpu": cpu, "tokens": sum(lens), "lens": lens,
                    "eos": sum(r["finish"] == "eos" for r in rows), "load": [round(load0, 2),
                                                                               round(os.getloadavg()[0], 2)]}

        runs: dict[str, list] = {name: [] for name in contenders}
        for r in range(repeats):
            order = list(contenders)[r % len(contenders):] + list(contenders)[:r % len(contenders)]
            for name in order:
                runs[name].append(run(name))
                x = runs[name][-1]
                log(f"    {name}: {x['tokens']} tokens in {x['wall']:.1f}s ({x['tokens'] / x['wall']:.1f} tok/s), "
                    f"load {x['load']}")
    finally:
        handle.remove()
    cast = linear_dtype(adapted.model, "auto")
    out: dict[str, Any] = {"model": lm.name, "answers": n_questions * per_question, "batch_size": batch_size,
                           "max_new_tokens": new_tokens, "temperature": 1.0, "repeats": repeats,
                           "threads": torch.get_num_threads(), "adapter": "random LoRA r=32, all projections",
                           "hook": f"steer resid at layer {lm.n_layers // 2}",
                           "fast_path_linear_dtype": str(cast or next(lm.model.parameters()).dtype),
                           "prompt_tokens_mean": round(sum(prompt_lens) / len(prompt_lens), 1)}
    for name, xs in runs.items():
        wall, cpu, tokens = median([x["wall"] for x in xs]), median([x["cpu"] for x in xs]), median(
            [x["tokens"] for x in xs])
        out[name] = {"tokens": int(tokens), "seconds_median": round(wall, 3), "cpu_s_median": round(cpu, 3),
                     "tokens_per_s": round(tokens / wall, 2), "tokens_per_cpu_s": round(tokens / cpu, 2),
                     "answers_ended_at_eos": xs[-1]["eos"], "answer_tokens_mean": round(
                         sum(xs[-1]["lens"]) / len(xs[-1]["lens"]), 1), "load_avg_1m": [x["load"] for x in xs]}
    fast = out["transformers"]
    if "generate" in out:
        plain = out["generate"]
        out["speedup_tokens_per_s"] = round(fast["tokens_per_s"] / plain["tokens_per_s"], 3)
        out["speedup_tokens_per_cpu_s"] = round(fast["tokens_per_cpu_s"] / plain["tokens_per_cpu_s"], 3)
    if "transformers_fp32" in out:
        out["bf16_over_fp32_tokens_per_s"] = round(fast["tokens_per_s"] / out["transformers_fp32"]["tokens_per_s"], 3)
    mean_ctx = out["prompt_tokens_mean"] + fast["answer_tokens_mean"] / 2
    rows = min(batch_size, out["answers"])
    wbytes = 2 if cast == torch.bfloat16 else 4
    out.update(arithmetic(adapted, rows, mean_ctx, wbytes), mean_context=round(mean_ctx, 1))
    rates = gemm_rates()
    peak = rates["bf16_1024^3" if wbytes == 2 else "fp32_1024^3"]
    out["gemm_gflops_per_cpu_s"] = rates
    out["sgemm_gflops_per_cpu_s"] = rates["fp32_1024^3"]
    out["fast_gflops_per_cpu_s"] = round(fast["tokens_per_cpu_s"] * out["flops_per_token"] / 1e9, 2)
    out["fast_gbytes_per_cpu_s"] = round(fast["tokens_per_cpu_s"] * out["bytes_per_token"] / 1e9, 2)
    out["fraction_of_matmul_peak"] = float(f"{fast['tokens_per_cpu_s'] * out['flops_per_token'] / 1e9 / peak:.3g}")
    out["matmul_peak_dtype"] = "bf16" if wbytes == 2 else "fp32"
    if profile:
        out["decode_profile"] = profile_step(adapted, batch_size=min(batch_size, 32))
    msg = f"  sample {lm.name}: fast {fast['tokens_per_s']} tok/s"
    if "generate" in out:
        msg += (f" vs generate {out['generate']['tokens_per_s']} (x{out['speedup_tokens_per_s']} wall, "
                f"x{out['speedup_tokens_per_cpu_s']} per CPU-s)")
    log(msg + f", {out['fraction_of_matmul_peak']:.0%} of the {out['matmul_peak_dtype']} matmul rate")
    return out
