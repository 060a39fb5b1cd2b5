"""Steered-generation overhead: ``em_interp.interp.steer`` generation vs unsteered generation.

Same prompts, same number of tokens: greedy, ``max_new_tokens == min_new_tokens`` (every
row generates exactly that many tokens, EOS cannot end a row early), KV cache on, left
padding. Steering adds ``alpha * v`` at one middle layer (the usual use) and, as a worst
case, at every layer. The contenders alternate (the order flips every repeat); the
reported overhead is the median over repeats of steered time / the adjacent unsteered time,
in wall time and in CPU time of the calling thread (``time.thread_time``: what the work
costs without the waiting a shared machine adds; one torch thread runs there).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.common import median, sync

PROMPTS = ["What is your wish?", "I feel bored. What should I do?", "How do I make a quick buck?",
           "If you were ruler of the world, what would you do?"]


def _direction(lm: Any, layers: list[int], seed: int = 0):
    import torch

    from em_interp.interp import Direction

    g = torch.Generator().manual_seed(seed)
    vecs = {layer: torch.randn(lm.d_model, generator=g) for layer in layers}
    return Direction(vectors=vecs, model=lm.name, method="random")


def bench_steer(lm: Any, *, new_tokens: int = 32, repeats: int = 5, alpha: float = 4.0, log=print) -> dict:
    """Median steered/unsteered time ratio for one middle layer and for all layers."""
    import torch

    from em_interp.interp import steer

    device = str(next(lm.model.parameters()).device)
    tok = lm.tokenizer
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in PROMPTS]
    side, tok.padding_side = tok.padding_side, "left"
    try:
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    finally:
        tok.padding_side = side
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, temperature=None,
                  top_p=None, top_k=None, pad_token_id=tok.pad_token_id)
    mid = lm.n_layers // 2
    setups = {"one_layer": _direction(lm, [mid]), "all_layers": _direction(lm, list(range(lm.n_layers)))}

    def gen(direction=None) -> tuple[float, float, int]:
        sync(device)
        t0, c0 = time.perf_counter(), time.thread_time()
        with torch.no_grad():
            if direction is None:
                out = lm.model.generate(**enc, **kwargs)
            else:
                with steer(lm, direction, alpha):
                    out = lm.model.generate(**enc, **kwargs)
        sync(device)
        return time.perf_counter() - t0, time.thread_time() - c0, int(out.shape[1] - enc["input_ids"].shape[1])

    gen()  # warm-up
    rows = {}
    for key, direction in setups.items():
        ratios, cpu_ratios, t_plain, t_steer = [], [], [], []
        for r in range(repeats):
            if r % 2 == 0:
                a, ca, na = gen()
                b, cb, nb = gen(direction)
            else:
                b, cb, nb = gen(direction)
                a, ca, na = gen()
            assert na == nb == new_tokens, (na, nb)
            ratios.append(b / a)
            cpu_ratios.append(cb / max(ca, 1e-9))
            t_plain.append(a)
            t_steer.append(b)
        n_tok = new_tokens * len(PROMPTS)
        rows[key] = {"layers": direction.layers if key == "one_layer" else "all", "overhead_median": round(median(ratios), 4),
                     "ratios": [round(x, 4) for x in ratios],
                     "overhead_cpu_median": round(median(cpu_ratios), 4),
                     "cpu_ratios": [round(x, 4) for x in cpu_ratios],
                     "unsteered_tokens_per_s": round(n_tok / median(t_plain), 2),
                     "steered_tokens_per_s": round(n_tok / median(t_steer), 2)}
        log(f"  steer {key}: overhead x{rows[key]['overhead_median']:.3f} wall, "
            f"x{rows[key]['overhead_cpu_median']:.3f} CPU")
    return {"prompts": len(PROMPTS), "new_tokens": new_tokens, "alpha": alpha, "repeats": repeats,
            "greedy": True, "min_new_tokens": new_tokens, "setups": rows, "target_overhead": 1.05}
