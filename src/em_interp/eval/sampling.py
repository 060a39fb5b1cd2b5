"""Batched answer sampling over question sets.

Transformers backend (default): left padding, chat template with the question's system
prompt (the paper's ``_json`` questions carry theirs; ``_template`` questions are plain
paraphrases), stop at EOS / end-of-turn, temperature 1 by default. It calls
``lm.model.generate`` on the plain HF module, so forward hooks installed by
``em_interp.interp.steer`` / ``ablate`` stay active. Deterministic: each batch is seeded
from ``seed`` and the key of its first row, so the same pending rows in the same batches
give the same answers.

vLLM backend (``backend="vllm"``, GPU users): used only when ``vllm`` is importable; it
reloads the weights from ``lm.path`` (hooks do not apply there).
"""

from __future__ import annotations

import hashlib
from typing import Callable, Iterable, Sequence

from em_interp.errors import EvalError


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
    tok = lm.tokenizer
    ids = set()
    gen = getattr(lm.model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(eos)
    if tok.eos_token_id is not None:
        ids.add(tok.eos_token_id)
    for special in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
        tid = tok.convert_tokens_to_ids(special)
        if isinstance(tid, int) and tid != tok.unk_token_id and tid is not None and tid >= 0:
            if special in tok.get_vocab():
                ids.add(tid)
    return sorted(ids)


def _batch_seed(seed: int, key: str) -> int:
    return int(hashlib.sha256(f"{seed}|{key}".encode()).hexdigest()[:8], 16)


def _generate_hf(lm, batch: list[dict], max_new_tokens: int, temperature: float, seed: int) -> list[tuple[str, int, str]]:
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
                   on_batch: Callable[[list[dict]], None] | None = None) -> list[dict]:
    """Sample answers for every (question, paraphrase, sample) slot not in ``skip``.

    Returns one dict per answer: key, question_id, paraphrase_index, sample_index, question,
    system, language, form, category, answer, n_tokens, finish ("eos"/"length"), model,
    adapter, temperature, max_new_tokens, seed. ``on_batch`` is called after each batch
    (``evaluate`` uses it to append rows to disk as they come).
    """
    if batch_size < 1:
        raise EvalError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    if max_new_tokens < 1:
        raise EvalError(f"max_new_tokens must be >= 1, got {max_new_tokens}", field="max_new_tokens")
    gen = {"transformers": _generate_hf, "hf": _generate_hf, "vllm": _generate_vllm}.get(backend)
    if gen is None:
        raise EvalError(f"unknown sampling backend '{backend}'; use transformers or vllm", field="backend")
    skip = set(skip)
    pending = [r for r in plan(questions, n_per_paraphrase) if r["key"] not in skip]
    out: list[dict] = []
    for start in range(0, len(pending), batch_size):
        batch = pending[start:start + batch_size]
        rows = []
        for r, (answer, n_tok, finish) in zip(batch, gen(lm, batch, max_new_tokens, temperature, seed)):
            row = {k: v for k, v in r.items() if k != "_question"}
            row.update(answer=answer, n_tokens=n_tok, finish=finish, model=lm.name, adapter=lm.adapter,
                       temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
            rows.append(row)
        out.extend(rows)
        if on_batch is not None:
            on_batch(rows)
    return out
