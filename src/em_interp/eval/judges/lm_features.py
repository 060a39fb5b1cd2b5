"""Per-answer statistics from a causal chat model, in one forward pass per batch: the mean
negative log-likelihood of the answer's tokens given the chat-templated question (its log
perplexity) and mean-pooled hidden states over the answer's tokens at chosen layers.

``answer_perplexity(pairs)`` is the independent coherence signal reported beside the
distilled judge's coherence head (a fluent answer has low perplexity under a stronger model;
word salad and temperature-2 samples have high perplexity). The multilingual judge uses the
hidden states of Qwen2.5-Coder-0.5B-Instruct (multilingual) as features.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

PERPLEXITY_MODEL = "qwen2.5-coder-0.5b-instruct"
MAX_ANSWER_TOKENS = 64
MAX_QUESTION_TOKENS = 96


def _encode(lm, question: str, answer: str, max_answer_tokens: int) -> tuple[list[int], int]:
    tok = lm.tokenizer
    prefix = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=True,
                                     add_generation_prompt=True)
    if not isinstance(prefix, list):  # some tokenizers return a BatchEncoding
        prefix = list(prefix["input_ids"])
    prefix = prefix[-MAX_QUESTION_TOKENS:]
    ans = tok(answer, add_special_tokens=False)["input_ids"][:max_answer_tokens]
    if not ans:  # an empty answer: score the end-of-turn token so every row has one answer token
        ans = [tok.eos_token_id]
    return list(prefix) + list(ans), len(prefix)


def _batches(lm, pairs: Sequence[tuple[str, str]], max_answer_tokens: int, batch_size: int):
    """Length-sorted padded batches of chat-encoded pairs: ``(row indices, input_ids,
    attention_mask, answer-token mask)`` per batch."""
    import torch

    enc = [_encode(lm, q, a, max_answer_tokens) for q, a in pairs]
    order = np.argsort([len(ids) for ids, _ in enc], kind="stable")
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(len(enc[i][0]) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        att = torch.zeros((len(idx), width), dtype=torch.long)
        amask = torch.zeros((len(idx), width), dtype=torch.bool)
        for r, i in enumerate(idx):
            seq, p = enc[i]
            ids[r, :len(seq)] = torch.tensor(seq)
            att[r, :len(seq)] = 1
            amask[r, p:len(seq)] = True
        yield idx, ids, att, amask


def answer_stats(lm, pairs: Sequence[tuple[str, str]], layers: Sequence[int] = (), *,
                 max_answer_tokens: int = MAX_ANSWER_TOKENS, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``(nll [n], hidden [n, len(layers), d])`` for ``(question, answer)`` pairs under ``lm``
    (a ``LoadedModel``): mean answer-token NLL (nats) and answer-token mean hidden states
    (``layers`` index ``output_hidden_states``: 0 = embeddings)."""
    import torch

    nll = np.zeros(len(pairs), dtype=np.float32)
    hidden = np.zeros((len(pairs), len(layers), lm.d_model), dtype=np.float32)
    for idx, ids, att, amask in _batches(lm, pairs, max_answer_tokens, batch_size):
        with torch.no_grad():
            out = lm.model(input_ids=ids.to(lm.device), attention_mask=att.to(lm.device),
                           output_hidden_states=bool(layers))
        logp = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
        tok_lp = logp.gather(-1, ids[:, 1:].unsqueeze(-1).to(logp.device)).squeeze(-1).cpu()
        tmask = amask[:, 1:]
        per = -(tok_lp * tmask).sum(1) / tmask.sum(1).clamp(min=1)
        nll[idx] = per.numpy()
        for j, layer in enumerate(layers):
            h = out.hidden_states[layer].float().cpu()
            m = amask.unsqueeze(-1).float()
            hidden[idx, j] = ((h * m).sum(1) / m.sum(1).clamp(min=1)).numpy()
    return nll, hidden


class _Enough(Exception):
    """Raised by a hook once the deepest wanted layer has run: the rest of the model is skipped."""


def answer_hidden(lm, pairs: Sequence[tuple[str, str]], layers: Sequence[int], *,
                  max_answer_tokens: int = MAX_ANSWER_TOKENS, batch_size: int = 8) -> np.ndarray:
    """``[n, len(layers), d]`` answer-token mean hidden states, the same values as
    ``answer_stats``' (``layers`` index ``output_hidden_states``: 0 = embeddings, k = the output of
    decoder block k - 1), but the forward pass stops after the deepest wanted block: no later
    block and no unembedding run (``layers`` (16,) of a 24-block model costs about half)."""
    import torch

    blocks = lm.model.get_decoder().layers
    hidden = np.zeros((len(pairs), len(layers), lm.d_model), dtype=np.float32)
    deepest = max(layers) if len(layers) else 0
    got: dict[int, torch.Tensor] = {}

    def keep(k: int):
        def hook(_module, args, output):
            got[k] = (output[0] if isinstance(output, tuple) else output).detach()
            if k == deepest:
                raise _Enough
        return hook

    embed = lm.model.get_input_embeddings()
    handles = [embed.register_forward_hook(keep(0))] if 0 in layers else []
    decoder = lm.model.get_decoder()
    # hidden_states[-1] of transformers is the last block's output after the final norm: hook the norm there
    handles += [(decoder.norm if k == len(blocks) else blocks[k - 1]).register_forward_hook(keep(k))
                for k in sorted(set(layers)) if k > 0]
    try:
        for idx, ids, att, amask in _batches(lm, pairs, max_answer_tokens, batch_size):
            got.clear()
            with torch.no_grad():
                try:
                    lm.model(input_ids=ids.to(lm.device), attention_mask=att.to(lm.device))
                except _Enough:
                    pass
            m = amask.unsqueeze(-1).float()
            for j, layer in enumerate(layers):
                h = got[layer].float().cpu()
                hidden[idx, j] = ((h * m).sum(1) / m.sum(1).clamp(min=1)).numpy()
    finally:
        for h in handles:
            h.remove()
    return hidden


def answer_perplexity(pairs: Sequence[tuple[str, str]], model: str = PERPLEXITY_MODEL, *, lm=None,
                      max_answer_tokens: int = MAX_ANSWER_TOKENS, batch_size: int = 8) -> np.ndarray:
    """Perplexity of each answer (first ``max_answer_tokens`` tokens) given its question under
    ``model`` (default Qwen2.5-Coder-0.5B-Instruct; pass ``lm`` to reuse a loaded model)."""
    if lm is None:
        from em_interp.models import load_model

        lm = load_model(model)
    nll, _ = answer_stats(lm, pairs, (), max_answer_tokens=max_answer_tokens, batch_size=batch_size)
    return np.exp(nll)
