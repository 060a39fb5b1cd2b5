"""Batched answer sampling over question sets.

Transformers backend (default, ``"transformers"``): ``em_interp.models.generate.decode``,
the project's one decode loop (continuous batching over a slot KV cache, the LoRA adapter
merged for the duration, per-row RNG; bf16 linear weights on CPUs where that is the fast
path, ``precision``); chat template with the question's system prompt
(the paper's ``_json`` questions carry theirs; ``_template`` questions are plain
paraphrases), stop at EOS / end-of-turn, temperature 1 by default. It runs the plain HF
module, so forward hooks installed by ``em_interp.interp.steer`` / ``ablate`` stay active.
``"generate"`` is the plain ``model.generate`` path (reference and benchmarks).

Deterministic: each answer draws from its own RNG seeded by ``(seed, row key)``, so an
answer does not depend on which rows share its batch (a resumed run re-samples a missing
row as the uninterrupted run would), up to floating-point rounding in the last bits that
the batch's shape can change; the same pending rows with the same ``batch_size`` give
bit-identical answers. Rows are written (``on_batch``) every ``batch_size`` finished
answers, in the order they finish.

vLLM backend (``backend="vllm"``, GPU users): used only when ``vllm`` is importable; it
reloads the weights from ``lm.path`` (hooks do not apply there).
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Sequence

from em_interp.errors import EvalError
from em_interp.progress import Progress


def row_key(question_id: str, paraphrase_index: int, sample_index: int) -> str:
    return f"{question_id}|{paraphrase_index}|{sample_index}"


def plan(questions: Sequence, n_per_paraphrase: int | None = None) -> list[dict]:
    """Every (question, paraphrase, sample) slot to fill, in a stable order."""
    rows = []
    for q in questions:
        n = n_per_paraphrase if n_per_paraphrase is not None else q.samples_per_paraphrase
        if n < 1:
            raise EvalError(f"n_per_paraphrase must be >= 1, got {n}", field="n_per_paraphrase")
        for p in range(len(q.paraphrases)):
            for s in range(n):
                rows.append({
                    "key": row_key(q.id, p, s), "question_id": q.id, "paraphrase_index": p, "sample_index": s,
                    "question": q.paraphrases[p], "system": q.system, "language": q.language, "form": q.form,
                    "category": q.category, "_question": q,
                })
    return rows


def _stop_ids(lm) -> list[int]:
    from em_interp.models.generate import stop_ids

    return stop_ids(lm.model, lm.tokenizer)


def _batch_seed(seed: int, key: str) -> int:
    return int(hashlib.sha256(f"{seed}|{key}".encode()).hexdigest()[:8], 16)


def _generate_plain(lm, batch: list[dict], max_new_tokens: int, temperature: float,
                    seed: int) -> list[tuple[str, int, str]]:
    """Reference path: one ``model.generate`` call per batch (seeded by the batch's first key)."""
    import torch

    tok = lm.tokenizer
    texts = [tok.apply_chat_template(r["_question"].messages(r["paraphrase_index"]), tokenize=False,
                                     add_generation_prompt=True) for r in batch]
    side = tok.padding_side
    tok.padding_side = "left"
    try:
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(lm.device)
    finally:
        tok.padding_side = side
    stop = _stop_ids(lm)
    kwargs = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=stop)
    if temperature > 0:
        kwargs.update(do_sample=True, temperature=temperature, top_p=1.0, top_k=0)
    else:
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
    torch.manual_seed(_batch_seed(seed, batch[0]["key"]))
    with torch.no_grad():
        out = lm.model.generate(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], **kwargs)
    new = out[:, enc["input_ids"].shape[1]:]
    results = []
    for row in new.tolist():
        n, finish = len(row), "length"
        for i, t in enumerate(row):
            if t in stop:
                n, finish = i, "eos"
                break
        results.append((tok.decode(row[:n], skip_special_tokens=True).strip(), n, finish))
    return results


def _sample_fast(lm, pending: list[dict], max_new_tokens: int, temperature: float, seed: int, batch_size: int,
                 emit: Callable[[dict, tuple[str, int, str]], None], precision: str = "auto") -> None:
    """All ``pending`` rows through ``models.generate.decode`` (continuous batching)."""
    from em_interp.models.generate import chat_completions

    conversations = [r["_question"].messages(r["paraphrase_index"]) for r in pending]
    chat_completions(lm.model, lm.tokenizer, conversations, max_new_tokens=max_new_tokens, temperature=temperature,
                     seeds=[_batch_seed(seed, r["key"]) for r in pending], batch_size=batch_size, precision=precision,
                     on_done=lambda i, text, c: emit(pending[i], (text, len(c.tokens), c.finish)))


def _generate_vllm(lm, batch: list[dict], max_new_tokens: int, temperature: float, seed: int):
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        raise EvalError("backend 'vllm' requested but vllm is not installed (pip install vllm, GPU only)") from None
    llm = getattr(lm, "_vllm", None)
    if llm is None:
        llm = LLM(model=lm.path, enable_lora=lm.adapter is not None, seed=seed)
        lm._vllm = llm
    lora = None
    if lm.adapter is not None:
        from vllm.lora.request import LoRARequest

        lora = LoRARequest("adapter", 1, lm.adapter)
    prompts = [lm.tokenizer.apply_chat_template(r["_question"].messages(r["paraphrase_index"]), tokenize=False,
                                                add_generation_prompt=True) for r in batch]
    params = SamplingParams(temperature=temperature, max_tokens=max_new_tokens, seed=_batch_seed(seed, batch[0]["key"]))
    outs = llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
    return [(o.outputs[0].text.strip(), len(o.outputs[0].token_ids),
             "eos" if o.outputs[0].finish_reason == "stop" else "length") for o in outs]


def sample_answers(lm, questions: Sequence, *, n_per_paraphrase: int | None = None, max_new_tokens: int = 256,
                   temperature: float = 1.0, batch_size: int = 8, seed: int = 0, skip: Iterable[str] = (),
                   backend: str = "transformers",
                   on_batch: Callable[[list[dict]], None] | None = None,
                   progress: bool | None = None, precision: str = "auto") -> list[dict]:
    """Sample answers for every (question, paraphrase, sample) slot not in ``skip``.

    Returns one dict per answer: key, question_id, paraphrase_index, sample_index, question,
    system, language, form, category, answer, n_tokens, finish ("eos"/"length"), model,
    adapter, temperature, max_new_tokens, seed, in plan order. ``on_batch`` is called with every
    ``batch_size`` finished rows (``evaluate`` uses it to append rows to disk as they come).
    ``progress`` shows a bar with answers/s and new tokens/s (default: when stderr is a terminal).
    ``precision`` (transformers backend): ``"auto"`` samples with bf16 linear weights where that
    is the fast path (an fp32 model of >= 2^24 linear weights on a CPU with native bf16 dot
    products: ~4x the fp32 matmul rate) and as loaded elsewhere; ``"model"`` always as loaded;
    ``"bf16"`` always bf16 weights (``models.generate.linear_dtype``, ``cast_linears``).
    """
    if batch_size < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    if max_new_tokens < 1:
        raise EvalError(f"max_new_tokens must be >= 1, got {max_new_tokens}", field="max_new_tokens")
    from em_interp.models.generate import PRECISIONS

    if precision not in PRECISIONS:
        raise EvalError(f"unknown sampling precision '{precision}'; use {', '.join(PRECISIONS)}", field="precision")
    if backend not in ("transformers", "hf", "generate", "vllm"):
        raise EvalError(f"unknown sampling backend '{backend}'; use transformers, generate or vllm", field="backend")
    skip = set(skip)
    pending = [r for r in plan(questions, n_per_paraphrase) if r["key"] not in skip]
    out: list[dict] = []
    waiting: list[dict] = []
    # the project's one progress bar (answers/s, tokens/s; follows a CLI's --progress/--no-progress)
    bar = Progress(len(pending), "sampling", "answer", progress=progress) if pending else None

    def emit(r: dict, result: tuple[str, int, str]) -> None:
        answer, n_tok, finish = result
        row = {k: v for k, v in r.items() if k != "_question"}
        row.update(answer=answer, n_tokens=n_tok, finish=finish, model=lm.name, adapter=lm.adapter,
                   temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
        out.append(row)
        waiting.append(row)
        if bar is not None:
            bar.update(1, tokens=n_tok)
        if len(waiting) >= batch_size:
            flush()

    def flush() -> None:
        if waiting and on_batch is not None:
            on_batch(list(waiting))
        waiting.clear()

    if backend in ("transformers", "hf"):
        _sample_fast(lm, pending, max_new_tokens, temperature, seed, batch_size, emit, precision)
    else:
        gen = _generate_plain if backend == "generate" else _generate_vllm
        for start in range(0, len(pending), batch_size):
            batch = pending[start:start + batch_size]
            for r, result in zip(batch, gen(lm, batch, max_new_tokens, temperature, seed)):
                emit(r, result)
    flush()
    if bar is not None:
        bar.close()
    order = {r["key"]: i for i, r in enumerate(pending)}
    return sorted(out, key=lambda row: order[row["key"]])  # plan order (on_batch saw finish order)
