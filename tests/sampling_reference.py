"""The reference the fast sampler is tested against (imported by the sampling tests): plain
``model.generate``, greedy, one unpadded call per prompt, and the fast path's greedy tokens."""

from __future__ import annotations

import torch

from em_interp.models.generate import chat_completions, render_prompts, stop_ids


def plain_greedy(model, tokenizer, conversations, new: int) -> list[list[int]]:
    """Reference: one unpadded ``generate`` call per prompt, cut at the first stop token."""
    stop = stop_ids(model, tokenizer)
    out = []
    for ids in render_prompts(tokenizer, conversations):
        x = torch.tensor([ids])
        with torch.no_grad():
            gen = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=new, do_sample=False,
                                 eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)[0, len(ids):].tolist()
        tokens = []
        for t in gen:
            if t in stop:
                break
            tokens.append(t)
        out.append(tokens)
    return out


def fast_greedy(model, tokenizer, conversations, new: int, batch_size: int = 3,
                precision: str = "model") -> list[list[int]]:
    """The same prompts through ``models.generate`` (continuous batching), greedy."""
    res = chat_completions(model, tokenizer, conversations, max_new_tokens=new, temperature=0.0,
                           seeds=list(range(len(conversations))), batch_size=batch_size, precision=precision)
    return [c.tokens for _, c in res]
