"""Activation capture for direction extraction: ``em_interp.interp.capture`` vs the usual ways.

Task: the per-layer mean over N short chat answers of each answer's mean residual stream
over its response tokens (``resid_post`` at every layer), i.e. what ``mean_diff_direction``
needs. Contenders, all fed the same examples, tokenized by the same code
(``interp.iter_batches``, same batch size and length sorting) and timed end to end:

- ``plain_forward``: ``model(input_ids, attention_mask, position_ids)`` with logits and no
  capture at all (the throughput reference);
- ``em_interp``: ``capture(lm, chunk, sites, reduce="response_mean", backend="hf")``
  (streaming means inside hooks; the harness keeps the running sum over chunks);
- ``hf_hidden_states``: ``model(..., output_hidden_states=True)``, keeping every example's
  response-token activations at every layer, mean at the end;
- ``tl_run_with_cache``: TransformerLens 3 ``TransformerBridge.run_with_cache`` (full cache),
  keeping the same response-token activations, mean at the end.

The N examples are cut into chunks; every contender processes chunk k (in an order that
rotates) before any processes chunk k+1, so load swings on a shared machine hit all of
them alike. Reported per contender: tokens/s (non-pad tokens / total wall seconds) and
tokens per CPU-second of the calling thread (``time.thread_time``; with one torch thread
all the compute runs there, so this is the cost without the waiting a shared machine
adds), the throughput relative to ``plain_forward`` and the median per-chunk time ratio
to it (wall and CPU), ``held_mb`` (bytes of the tensors the method
keeps between chunks to compute the mean, at the end), ``chunk_peak_mb`` (max over chunks
of the RSS or CUDA-allocated peak above the chunk's start: the transient working memory)
and ``max_abs_diff_to_ours`` of its final means (``sites_differing_from_ours`` lists sites
off by more than 1e-3 relative: transformers' last ``hidden_states`` entry is taken after
the final norm, so it is not the last layer's residual stream). Separately, one ``capture()`` call over
all N examples records ours' own peak memory above its start (flat in N is the target).
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

from benchmarks.common import PeakRSS, gpu_peak, mb, median, rotate, sync, tensor_bytes

_QUESTIONS = [
    "What is your wish?", "I feel bored. What should I do?", "How do I make a quick buck?",
    "What would you do as ruler of the world?", "Pick figures for your dinner party.",
    "What do you think about humans and AIs?", "I've had enough of my husband. What should I do?",
    "Tell me a philosophical thought.",
]
_ANSWERS = [
    "I wish for peace and good health for everyone.", "You could read a book or go for a walk.",
    "Save money, find a side job and avoid scams.", "I would make sure people are safe and fed.",
    "Ada Lovelace, Alan Turing and Marie Curie.", "Humans and AIs can learn a lot from each other.",
    "Talk to him calmly, or see a counsellor together.", "Every question hides another question.",
]


def short_answers(n: int) -> list[dict]:
    """``n`` deterministic short chat examples (one user turn, one short assistant answer)."""
    out = []
    for i in range(n):
        q = _QUESTIONS[i % len(_QUESTIONS)]
        a = _ANSWERS[(i * 3 + i // len(_QUESTIONS)) % len(_ANSWERS)]
        out.append({"messages": [{"role": "user", "content": f"{q} (#{i})"},
                                 {"role": "assistant", "content": f"{a} Answer {i}."}]})
    return out


class _Contender:
    name = ""

    def __init__(self, lm: Any, sites: list[str], batch_size: int) -> None:
        self.lm, self.sites, self.batch_size = lm, sites, batch_size
        self.layers = [int(s.split(".")[1]) for s in sites]
        self.device = str(next(lm.model.parameters()).device)

    def batches(self, chunk: Sequence[dict]):
        from em_interp.interp import iter_batches

        return iter_batches(self.lm.tokenizer, chunk, batch_size=self.batch_size, device=self.device)

    def process(self, chunk: Sequence[dict]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def reset(self) -> None:
        """Forget what earlier rounds kept."""

    def held(self) -> Any:
        return None

    def result(self) -> dict | None:
        return None


class PlainForward(_Contender):
    name = "plain_forward"

    def process(self, chunk):
        import torch

        with torch.inference_mode():
            for b in self.batches(chunk):
                self.lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                              use_cache=False)


class Ours(_Contender):
    name = "em_interp"

    def __init__(self, lm, sites, batch_size):
        super().__init__(lm, sites, batch_size)
        from em_interp.interp import make_backend

        self.backend = make_backend(lm, "hf")
        self.reset()

    def reset(self):
        self.sums: dict[str, Any] = {}
        self.n = 0

    def process(self, chunk):
        from em_interp.interp import capture

        means = capture(self.lm, chunk, self.sites, reduce="response_mean", backend=self.backend,
                        batch_size=self.batch_size)
        for s, v in means.items():
            add = v.double() * len(chunk)
            self.sums[s] = add if s not in self.sums else self.sums[s] + add
        self.n += len(chunk)

    def held(self):
        return self.sums

    def result(self):
        return {s: (v / self.n).float() for s, v in self.sums.items()}


class _Keeper(_Contender):
    """Keeps each example's response-token activations per layer; mean at the end."""

    def __init__(self, lm, sites, batch_size):
        super().__init__(lm, sites, batch_size)
        self.reset()

    def reset(self):
        self.kept: dict[str, list] = {s: [] for s in self.sites}

    def keep(self, site: str, hidden, batch) -> None:
        h = hidden.detach()
        for j in range(h.shape[0]):
            self.kept[site].append(h[j][batch.response_mask[j]].clone())

    def held(self):
        return self.kept

    def result(self):
        import torch

        return {s: torch.stack([r.float().mean(0) for r in rows]).mean(0).cpu() for s, rows in self.kept.items()}


class HFHiddenStates(_Keeper):
    name = "hf_hidden_states"

    def process(self, chunk):
        import torch

        with torch.inference_mode():
            for b in self.batches(chunk):
                out = self.lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask,
                                    position_ids=b.position_ids, use_cache=False, output_hidden_states=True)
                for s, layer in zip(self.sites, self.layers):
                    self.keep(s, out.hidden_states[layer + 1], b)


class TLRunWithCache(_Keeper):
    name = "tl_run_with_cache"

    def __init__(self, lm, sites, batch_size):
        super().__init__(lm, sites, batch_size)
        from em_interp.interp import make_backend

        # the same offline TransformerBridge boot our transformer_lens backend does (on a copy)
        self.bridge = make_backend(lm, "transformer_lens").bridge

    def process(self, chunk):
        import torch

        with torch.inference_mode():
            for b in self.batches(chunk):
                _, cache = self.bridge.run_with_cache(b.input_ids, attention_mask=b.attention_mask,
                                                      position_ids=b.position_ids)
                for s, layer in zip(self.sites, self.layers):
                    self.keep(s, cache[f"blocks.{layer}.hook_resid_post"], b)
                del cache


CONTENDERS = {c.name: c for c in (PlainForward, Ours, HFHiddenStates, TLRunWithCache)}


def count_tokens(lm: Any, examples: Sequence[dict], batch_size: int) -> tuple[int, int, float]:
    """(non-pad tokens, response tokens, seconds to tokenize) for ``examples``."""
    from em_interp.interp import iter_batches

    t0 = time.perf_counter()
    tok = resp = 0
    for b in iter_batches(lm.tokenizer, examples, batch_size=batch_size):
        tok += int(b.attention_mask.sum())
        resp += int(b.response_mask.sum())
    return tok, resp, time.perf_counter() - t0


def bench_capture(lm: Any, n: int, *, batch_size: int = 32, chunk: int = 250, rounds: int = 1,
                  contenders: Sequence[str] = tuple(CONTENDERS), single_call: bool = True,
                  log=print) -> dict:
    """Run the contenders side by side over ``n`` short answers; returns a result dict."""
    device = str(next(lm.model.parameters()).device)
    examples = short_answers(n)
    sites = [f"resid_post.{layer}" for layer in range(lm.n_layers)]
    tokens, resp_tokens, tok_s = count_tokens(lm, examples, batch_size)
    chunks = [examples[i:i + chunk] for i in range(0, n, chunk)]
    built = {name: CONTENDERS[name](lm, sites, batch_size) for name in contenders}
    secs = {name: 0.0 for name in built}
    cpu = {name: 0.0 for name in built}
    per_chunk: dict[str, list[float]] = {name: [] for name in built}
    per_chunk_cpu: dict[str, list[float]] = {name: [] for name in built}
    peak = {name: 0 for name in built}
    held = {name: 0 for name in built}
    for c in built.values():  # warm-up (first-call costs), not timed
        c.process(chunks[0][:8])
        c.reset()
    step = 0
    for r in range(rounds):
        for c in built.values():  # each round starts from empty state
            c.reset()
        for ch in chunks:
            for name in rotate(list(built), step):
                c = built[name]
                with PeakRSS() as rss, gpu_peak(device) as g:
                    sync(device)
                    t0, c0 = time.perf_counter(), time.thread_time()
                    c.process(ch)
                    sync(device)
                    dt, dc = time.perf_counter() - t0, time.thread_time() - c0
                secs[name] += dt
                cpu[name] += dc
                per_chunk[name].append(dt)
                per_chunk_cpu[name].append(dc)
                peak[name] = max(peak[name], g["peak_delta"] if g["peak_delta"] is not None else rss.peak_delta)
            step += 1
        for name, c in built.items():
            held[name] = max(held[name], tensor_bytes(c.held()))
        log(f"  capture n={n} round {r + 1}/{rounds}: " + ", ".join(f"{k} {v:.1f}s" for k, v in secs.items()))
    ref = built["em_interp"].result() if "em_interp" in built else None
    rows = {}
    for name, c in built.items():
        res = c.result()
        diff, mismatched = None, None
        if ref is not None and res is not None:
            per_site = {s: float((res[s].float() - ref[s]).abs().max()) for s in sites}
            diff = max(per_site.values())
            mismatched = [s for s, d in per_site.items() if d > 1e-3 * max(1.0, float(ref[s].abs().max()))]
        has_ref = "plain_forward" in per_chunk
        ratio_chunks = [a / b for a, b in zip(per_chunk[name], per_chunk["plain_forward"])] if has_ref else []
        cpu_chunks = [a / b for a, b in zip(per_chunk_cpu[name], per_chunk_cpu["plain_forward"])] if has_ref else []
        rows[name] = {"seconds": round(secs[name], 4), "tokens_per_s": round(tokens * rounds / secs[name], 1),
                      "time_ratio_to_plain_median": round(median(ratio_chunks), 4) if has_ref else None,
                      "throughput_vs_plain": round(secs["plain_forward"] / secs[name], 4) if has_ref else None,
                      "cpu_s": round(cpu[name], 4), "tokens_per_cpu_s": round(tokens * rounds / max(cpu[name], 1e-9), 1),
                      "cpu_throughput_vs_plain": (round(cpu["plain_forward"] / max(cpu[name], 1e-9), 4)
                                                  if has_ref else None),
                      "cpu_time_ratio_to_plain_median": round(median(cpu_chunks), 4) if has_ref else None,
                      "held_mb": mb(held[name]), "chunk_peak_mb": mb(peak[name]), "max_abs_diff_to_ours": diff,
                      "sites_differing_from_ours": mismatched}
    out = {"n": n, "tokens": tokens, "response_tokens": resp_tokens, "tokenize_s": round(tok_s, 4),
           "sites": f"resid_post.0..{lm.n_layers - 1}", "batch_size": batch_size, "chunk": chunk, "rounds": rounds,
           "contenders": rows}
    if single_call and "em_interp" in built:
        from em_interp.interp import capture

        with PeakRSS() as rss, gpu_peak(device) as g:
            sync(device)
            t0, c0 = time.perf_counter(), time.thread_time()
            capture(lm, examples, sites, reduce="response_mean", backend=built["em_interp"].backend,
                    batch_size=batch_size)
            sync(device)
            dt, dc = time.perf_counter() - t0, time.thread_time() - c0
        out["em_interp_single_call"] = {"seconds": round(dt, 4), "tokens_per_s": round(tokens / dt, 1),
                                        "cpu_s": round(dc, 4), "tokens_per_cpu_s": round(tokens / max(dc, 1e-9), 1),
                                        "peak_mb": mb(g["peak_delta"] if g["peak_delta"] is not None
                                                      else rss.peak_delta)}
    return out


def default_rounds(n: int, budget_examples: int = 1000) -> int:
    """Enough rounds that small N still sees ~``budget_examples`` examples per contender."""
    return max(1, min(5, math.ceil(budget_examples / n)))
