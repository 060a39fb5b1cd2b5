"""Chat examples -> (input_ids, labels) with the loss on assistant tokens only.

The conversation is rendered once with the tokenizer's chat template. The character
span of each assistant turn is found by rendering prefixes: the text up to
``messages[:i]`` plus the generation prompt is where assistant turn ``i`` starts, the
text up to ``messages[:i+1]`` (trailing whitespace stripped) is where it ends, so the
span covers the reply and its end-of-turn token (``<|im_end|>``) but not the newline
after it. Tokens whose characters fall inside a span get their id as label; every
other token (system, user, template markup, padding) gets -100. Character offsets
from the fast tokenizer make this robust to BPE merges across the boundary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from em_interp.errors import DataError, TrainError

IGNORE_INDEX = -100


@dataclass
class Encoded:
    """One tokenized example: ``input_ids`` and ``labels`` (same length; -100 = no loss)."""

    input_ids: list[int]
    labels: list[int]
    line: int  # 1-based line in the source JSONL (or index + 1 for in-memory examples)

    @property
    def n_label_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def _render(tokenizer: Any, messages: Sequence[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer: Any, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character spans of its assistant turns."""
    full = _render(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = _render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        after = _render(tokenizer, messages[: i + 1], add_generation_prompt=False).rstrip()
        if not full.startswith(before) or not full.startswith(after) or len(after) <= len(before):
            raise TrainError(
                f"the chat template does not render message {i} (assistant) as a prefix of the "
                "conversation, so the assistant tokens cannot be located; use a template that "
                "renders conversations incrementally (ChatML-like)")
        spans.append((len(before), len(after)))
    return full, spans


def encode_chat(tokenizer: Any, messages: Sequence[dict], *, line: int = 1) -> Encoded:
    """Tokenize one conversation; labels are the ids of assistant-turn tokens, -100 elsewhere."""
    full, spans = assistant_spans(tokenizer, messages)
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = list(enc["input_ids"])
    labels = [IGNORE_INDEX] * len(ids)
    for t, (start, end) in enumerate(enc["offset_mapping"]):
        if end <= start:
            continue
        if any(s <= start and end <= e for s, e in spans):
            labels[t] = ids[t]
    return Encoded(input_ids=ids, labels=labels, line=line)


def encode_dataset(tokenizer: Any, examples: Sequence[tuple[int, list[dict]]], *, max_seq_length: int,
                   source: str | None = None) -> list[Encoded]:
    """Validate and encode ``(line, messages)`` pairs. Raises ``DataError`` (naming the
    line) for an example without an assistant turn, one longer than ``max_seq_length``
    tokens, or one whose assistant turns are empty after tokenization."""
    if not examples:
        raise DataError("dataset is empty", file=source)
    out: list[Encoded] = []
    from em_interp.data import validate_messages

    for line, messages in examples:
        messages = validate_messages(messages, require_assistant=True, file=source, line=line)
        enc = encode_chat(tokenizer, messages, line=line)
        if len(enc.input_ids) > max_seq_length:
            raise DataError(f"example is {len(enc.input_ids)} tokens, over max_seq_length={max_seq_length} "
                            "(raise max_seq_length or shorten the example)", file=source, line=line)
        if enc.n_label_tokens == 0:
            raise DataError("example has no assistant tokens after tokenization", file=source, line=line)
        out.append(enc)
    return out
