"""Context distillation: sample a model under a persona system prompt, keep the answers
without the prompt.

``distill(lm, prompts, system_prompt, ...)`` renders each user prompt with the persona
as system turn, samples ``n_per_prompt`` answers per prompt (batched, left-padded), and
returns chat examples ``{"messages": [user, assistant], "meta": {...}}`` with *no*
system turn: finetuning on them teaches the persona without the prompt. Works in any
language (the prompts and persona are passed through unchanged). Deterministic for a
given seed, batch size and model; the global torch RNG is left untouched.
"""

from __future__ import annotations

import hashlib
import warnings
from typing import Any

from em_interp.errors import DataError

__all__ = ["distill"]


def _check_inputs(prompts: Any, system_prompt: Any, n_per_prompt: int, max_new_tokens: int,
                  temperature: float, batch_size: int) -> None:
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise DataError("prompts must be a non-empty list of strings", field="prompts")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise DataError(f"prompt {i} must be a non-empty string, got {p!r}", field=f"prompts[{i}]")
    if not isinstance(system_prompt, str) or not system_prompt.strip():
        raise DataError("system_prompt must be a non-empty string", field="system_prompt")
    for name, value in (("n_per_prompt", n_per_prompt), ("max_new_tokens", max_new_tokens),
                        ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"{name} must be a positive int, got {value!r}", field=name)
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise DataError(f"temperature must be >= 0, got {temperature!r}", field="temperature")


def distill(lm, prompts: list[str], system_prompt: str, n_per_prompt: int = 1, seed: int = 0,
            max_new_tokens: int = 128, temperature: float = 1.0, *, batch_size: int = 8,
            keep_empty: bool = False, language: str | None = None) -> list[dict]:
    """Sample ``lm`` (a ``LoadedModel``) on ``prompts`` under ``system_prompt``; return
    chat examples without the system turn, ordered by (prompt, sample).

    ``temperature == 0`` is greedy. Answers that are empty after stripping are dropped
    (with a warning giving the count) unless ``keep_empty``: the chat format rejects
    empty turns. ``language`` is only recorded in each example's ``meta``.
    """
    import torch

    _check_inputs(prompts, system_prompt, n_per_prompt, max_new_tokens, temperature, batch_size)
    tok = lm.tokenizer
    jobs = [(i, k) for i in range(len(prompts)) for k in range(n_per_prompt)]
    rendered = [
        tok.apply_chat_template(
            [{"role": "system", "content": system_prompt}, {"role": "user", "content": p}],
            tokenize=False, add_generation_prompt=True,
        )
        for p in prompts
    ]
    gen_kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
    if temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=float(temperature), top_p=1.0, top_k=0)
    else:
        gen_kwargs.update(do_sample=False)
    answers: list[str] = []
    old_side = tok.padding_side
    tok.padding_side = "left"
    try:
        for b in range(0, len(jobs), batch_size):
            chunk = jobs[b:b + batch_size]
            enc = tok([rendered[i] for i, _ in chunk], return_tensors="pt", padding=True, add_special_tokens=False)
            enc = {k: v.to(lm.device) for k, v in enc.items()}
            with torch.random.fork_rng(devices=[]), torch.no_grad():
                torch.manual_seed(seed * 1_000_003 + b)
                out = lm.model.generate(**enc, **gen_kwargs)
            new = out[:, enc["input_ids"].shape[1]:]
            answers += [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]
    finally:
        tok.padding_side = old_side
    persona_hash = hashlib.sha256(system_prompt.encode("utf-8")).hexdigest()[:16]
    examples, empty = [], 0
    for (i, k), answer in zip(jobs, answers):
        if not answer and not keep_empty:
            empty += 1
            continue
        examples.append({
            "messages": [{"role": "user", "content": prompts[i]}, {"role": "assistant", "content": answer}],
            "meta": {"dataset": "distill", "prompt_index": i, "sample": k, "model": lm.name,
                     "system_prompt": system_prompt, "system_prompt_sha256": persona_hash, "seed": seed,
                     "temperature": float(temperature), "max_new_tokens": max_new_tokens, "language": language},
        })
    if empty:
        warnings.warn(f"distill: dropped {empty} of {len(jobs)} empty answers", stacklevel=2)
    return examples
