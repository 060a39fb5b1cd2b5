"""Examples -> padded token batches with prompt / response masks.

An example is a chat conversation (``{"messages": [...]}``, an object with a
``.messages`` attribute such as ``em_interp.data.ChatExample``, or a bare list of message
dicts) or a raw string. In a conversation whose last turn is the assistant's, that turn is
"the response" and everything before it (through the generation prompt) is "the
prompt". A raw string has no prompt/response split: all its tokens count as both.

Token masks come from character offsets, so the response mask covers exactly the
response text's tokens (not the end-of-turn marker). Batches carry explicit
``position_ids`` so left and right padding give the same activations.

Token selection has one word everywhere: ``tokens`` (``TOKENS``): ``"all"`` (every
non-pad token), ``"prompt"``, ``"response"`` (a raw string's tokens count as both),
``"last_prompt"`` (the last prompt token, i.e. the end of the generation prompt).

BOS: ``prepend_bos=None`` (default) keeps the tokenizer's own convention (raw strings
encoded with ``add_special_tokens=True``, chats exactly as the chat template renders
them); ``True`` puts ``bos_id(tokenizer)`` in front when it is not already there (what
TransformerLens does: ``to_tokens`` prepends by default); ``False`` adds no special tokens
to raw strings.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from em_interp.data.chat_encode import Encoded, render_chat, tokenize_with_offsets
from em_interp.errors import InterpError

TOKENS = ("all", "prompt", "response", "last_prompt")
# deprecated spellings of the same selection: capture's old ``reduce=`` values
LEGACY_REDUCE = {"response_mean": "response", "prompt_mean": "prompt", "all_mean": "all",
                 "last_prompt": "last_prompt", "none": "all"}


def resolve_tokens(tokens: str | None, *, reduce: str | None = None, positions: str | None = None,
                   allowed: Sequence[str] = TOKENS, default: str = "response") -> str:
    """The token rule from ``tokens`` (or the deprecated ``reduce=`` / ``positions=`` spelling)."""
    import warnings

    for old, value in (("reduce", reduce), ("positions", positions)):
        if value is not None:
            if tokens is not None:
                raise InterpError(f"give tokens= or the deprecated {old}=, not both", field="tokens")
            warnings.warn(f"{old}= is deprecated; use tokens=", DeprecationWarning, stacklevel=3)
            tokens = LEGACY_REDUCE.get(value, value)
    tokens = default if tokens is None else LEGACY_REDUCE.get(tokens, tokens)
    if tokens not in allowed:
        raise InterpError(f"unknown tokens '{tokens}'; valid: {', '.join(allowed)}", field="tokens")
    return tokens


def bos_id(tokenizer: Any) -> int:
    """The BOS id a prepended BOS uses: the tokenizer's BOS, else its EOS (TransformerLens's rule)."""
    tid = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if tid is None:
        raise InterpError("prepend_bos=True but the tokenizer has neither a BOS nor an EOS token", field="prepend_bos")
    return int(tid)


@dataclass
class Batch:
    """A padded batch (tensors ``[B, T]``) and the example indices it holds."""

    input_ids: Any
    attention_mask: Any
    position_ids: Any
    prompt_mask: Any
    response_mask: Any
    indices: list[int]


def messages_of(example: Any) -> list[dict] | None:
    """The message list of a chat example, or ``None`` for a raw string."""
    if isinstance(example, str):
        return None
    if isinstance(example, dict):
        if "messages" in example:
            return list(example["messages"])
        raise InterpError(f"example dict needs a 'messages' key, got keys {sorted(example)}", field="examples")
    if isinstance(example, (list, tuple)) and all(isinstance(m, dict) for m in example):
        return list(example)
    if hasattr(example, "messages"):
        return list(example.messages)
    raise InterpError(f"an example must be a string, a {{'messages': [...]}} dict or a ChatExample, "
                      f"got {type(example).__name__}", field="examples")


def encode_example(tokenizer: Any, example: Any, *, index: int = 0, max_length: int | None = None,
                   prepend_bos: bool | None = None) -> Encoded:
    """Tokenize one example with the chat template and mark prompt / response tokens."""
    messages = messages_of(example)
    if messages is None:
        enc = tokenizer(example, add_special_tokens=prepend_bos is None)
        ids = list(enc["input_ids"])
        flags = [True] * len(ids)
        return _truncate(_with_bos(Encoded(ids, flags, list(flags)), tokenizer, prepend_bos), max_length, index)
    if not messages or not all(isinstance(m, dict) and "role" in m and "content" in m for m in messages):
        raise InterpError(f"example {index}: messages must be a non-empty list of {{role, content}} dicts",
                          field=f"examples[{index}].messages")
    has_response = messages[-1]["role"] == "assistant"
    prompt_msgs = messages[:-1] if has_response else messages
    prompt_text = render_chat(tokenizer, prompt_msgs, add_generation_prompt=True)
    if has_response:
        full_text = render_chat(tokenizer, messages, add_generation_prompt=False)
        content = str(messages[-1]["content"])
        start = full_text.rfind(content) if content else -1
        if start < 0:
            raise InterpError(f"example {index}: empty or unrenderable assistant response",
                              field=f"examples[{index}].messages[-1].content")
        end = start + len(content)
        prompt_chars = len(prompt_text) if full_text.startswith(prompt_text) else start
    else:
        full_text, start, end, prompt_chars = prompt_text, -1, -1, len(prompt_text)
    ids, offsets = tokenize_with_offsets(tokenizer, full_text)
    prompt = [e <= prompt_chars for _, e in offsets]
    response = [has_response and s < end and e > start for s, e in offsets]
    if not any(prompt) and ids:
        prompt[0] = True
    return _truncate(_with_bos(Encoded(ids, prompt, response), tokenizer, prepend_bos), max_length, index)


def _with_bos(enc: Encoded, tokenizer: Any, prepend_bos: bool | None) -> Encoded:
    """``enc`` with a BOS in front when ``prepend_bos`` is True and none is there (a prompt token)."""
    if not prepend_bos:
        return enc
    bos = bos_id(tokenizer)
    if enc.ids and enc.ids[0] == bos:
        return enc
    raw = all(enc.response) and all(enc.prompt)  # a raw string: the BOS counts as both
    return Encoded([bos] + enc.ids, [True] + enc.prompt, [raw] + enc.response)


def _truncate(enc: Encoded, max_length: int | None, index: int) -> Encoded:
    """Keep at most ``max_length`` tokens: a window around the prompt/response boundary
    (up to half the budget for the end of the prompt, the rest for the start of the
    response); a prompt-only example keeps its end, a raw string its start."""
    if not enc.ids:
        raise InterpError(f"example {index} tokenizes to nothing", field=f"examples[{index}]")
    n = len(enc.ids)
    if max_length is None or n <= max_length:
        return enc
    if max_length < 2:
        raise InterpError(f"max_length must be >= 2, got {max_length}", field="max_length")
    answer = [i for i in range(n) if enc.response[i] and not enc.prompt[i]]
    if answer:
        boundary = answer[0]
    else:
        boundary = 0 if all(enc.response) else n
    start = max(0, min(boundary - max_length // 2, n - max_length))
    sl = slice(start, start + max_length)
    return Encoded(enc.ids[sl], enc.prompt[sl], enc.response[sl])


def data_hash(examples: Sequence[Any]) -> str:
    """Short sha256 of the examples' JSON form (recorded in artifact metadata)."""
    h = hashlib.sha256()
    for ex in examples:
        msgs = messages_of(ex)
        h.update(json.dumps(ex if msgs is None else msgs, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()[:16]


def iter_batches(tokenizer: Any, examples: Sequence[Any], *, batch_size: int = 8, padding_side: str = "right",
                 max_length: int | None = None, device: Any = "cpu", sort_by_length: bool = True,
                 window_batches: int = 64, prepend_bos: bool | None = None) -> Iterator[Batch]:
    """Encode and pad examples into batches. Sorting by length (within windows of
    ``window_batches`` batches) keeps padding small; ``Batch.indices`` says which original
    examples each batch row is."""
    if padding_side not in ("left", "right"):
        raise InterpError(f"padding_side must be 'left' or 'right', got {padding_side!r}", field="padding_side")
    if batch_size < 1:
        raise InterpError(f"batch_size must be >= 1, got {batch_size}", field="batch_size")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Encode and length-sort a window of examples at a time, so the memory held for token
    # ids stays bounded however many examples stream through (not O(N)).
    window = max(batch_size * window_batches, batch_size)
    for w0 in range(0, len(examples), window):
        encoded = {i: encode_example(tokenizer, examples[i], index=i, max_length=max_length, prepend_bos=prepend_bos)
                   for i in range(w0, min(w0 + window, len(examples)))}
        order = sorted(encoded, key=lambda i: len(encoded[i].ids)) if sort_by_length else list(encoded)
        for b0 in range(0, len(order), batch_size):
            yield _pad_batch(order[b0:b0 + batch_size], encoded, pad_id, padding_side, device)


def _pad_batch(idx: list[int], encoded: dict, pad_id: int, padding_side: str, device: Any) -> Batch:
    """Pad the encoded examples ``idx`` into one batch (ids, attention, positions, masks)."""
    import torch

    rows = [encoded[i] for i in idx]
    T = max(len(r.ids) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(rows), T), dtype=torch.long)
    pm = torch.zeros((len(rows), T), dtype=torch.bool)
    rm = torch.zeros((len(rows), T), dtype=torch.bool)
    for j, r in enumerate(rows):
        n = len(r.ids)
        sl = slice(0, n) if padding_side == "right" else slice(T - n, T)
        ids[j, sl] = torch.tensor(r.ids)
        att[j, sl] = 1
        pm[j, sl] = torch.tensor(r.prompt)
        rm[j, sl] = torch.tensor(r.response)
    pos = (att.cumsum(1) - 1).clamp(min=0)
    return Batch(ids.to(device), att.to(device), pos.to(device), pm.to(device), rm.to(device), list(idx))
