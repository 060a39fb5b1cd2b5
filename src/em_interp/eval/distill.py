"""Context distillation: sample a model under a persona system prompt, keep the answers
without the prompt.

``distill(lm, prompts, system_prompt, ...)`` renders each user prompt with the persona
as system turn, samples ``n_per_prompt`` answers per prompt with the eval package's
batched sampler (``em_interp.eval.sampling.sample_answers``), and
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
            keep_empty: bool = False, language: str | None = None, backend: str = "transformers") -> list[dict]:
    """Sample ``lm`` (a ``LoadedModel``) on ``prompts`` under ``system_prompt``; return
    chat examples without the system turn, ordered by (prompt, sample).

    Sampling is ``em_interp.eval.sample_answers`` (batched, left padding, stops at EOS or
    end-of-turn; ``backend="vllm"`` on a GPU). ``temperature == 0`` is greedy. Answers
    that are empty after stripping are dropped (with a warning giving the count) unless
    ``keep_empty``: the chat format rejects empty turns. ``language`` is only recorded in
    each example's ``meta``.
    """
    import torch

    from em_interp.data.formats import Question
    from em_interp.eval.sampling import sample_answers

    _check_inputs(prompts, system_prompt, n_per_prompt, max_new_tokens, temperature, batch_size)
    questions = [Question(id=f"distill_{i:06d}", paraphrases=[p], system=system_prompt,
                          samples_per_paraphrase=n_per_prompt, type="free_form", language=language or "und")
                 for i, p in enumerate(prompts)]
    index = {q.id: i for i, q in enumerate(questions)}
    devices = [lm.device.index or 0] if lm.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the sampler seeds torch; keep the caller's RNG
        rows = sample_answers(lm, questions, n_per_paraphrase=n_per_prompt, max_new_tokens=max_new_tokens,
                              temperature=float(temperature), batch_size=batch_size, seed=seed, backend=backend)
    persona_hash = hashlib.sha256(system_prompt.encode("utf-8")).hexdigest()[:16]
    examples, empty = [], 0
    for row in rows:
        # a generation cut at max_new_tokens can end inside a multi-byte character
        answer = row["answer"].rstrip("\ufffd").strip()
        if not answer and not keep_empty:
            empty += 1
            continue
        i = index[row["question_id"]]
        examples.append({
            "messages": [{"role": "user", "content": prompts[i]}, {"role": "assistant", "content": answer}],
            "meta": {"dataset": "distill", "prompt_index": i, "sample": row["sample_index"], "model": lm.name,
                     "adapter": lm.adapter, "system_prompt": system_prompt, "system_prompt_sha256": persona_hash,
                     "seed": seed, "temperature": float(temperature), "max_new_tokens": max_new_tokens,
                     "n_tokens": row["n_tokens"], "finish": row["finish"], "language": language},
        })
    if empty:
        warnings.warn(f"distill: dropped {empty} of {len(rows)} empty answers", stacklevel=2)
    return examples
