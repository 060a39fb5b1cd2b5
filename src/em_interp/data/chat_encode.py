"""The one chat encoder: conversations -> token ids with per-token masks from character spans.

Training and interpretability both render a conversation with the tokenizer's chat
template, tokenize the text once with character offsets (robust to BPE merges across a
boundary) and mark the tokens whose characters fall inside given spans. They differ only
in which spans they mark, so both use this module and its one ``Encoded``:

- training (``encode_chat``): ``labels`` = the ids of every assistant turn's tokens
  including its end-of-turn token (``<|im_end|>``) but not the newline after it, -100
  elsewhere. Spans come from rendering prefixes: ``messages[:i]`` plus the generation
  prompt is where assistant turn ``i`` starts, ``messages[:i+1]`` (trailing whitespace
  stripped) is where it ends.
- interpretability (``em_interp.interp.inputs.encode_example``): ``prompt`` / ``response``
  flags, built with ``render_chat`` and ``tokenize_with_offsets``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from em_interp.data.formats import validate_messages
from em_interp.errors import DataError, TrainError

IGNORE_INDEX = -100


@dataclass(frozen=True)
class Encoded:
    """One tokenized example: ``ids`` plus the masks its user asked for (None = not computed)."""

    ids: list[int]
    prompt: list[bool] | None = None    # prompt tokens, through the generation prompt (interp)
    response: list[bool] | None = None  # the final assistant reply's text tokens (interp)
    labels: list[int] | None = None     # assistant-turn token ids, -100 elsewhere (train loss)
    line: int = 1                       # 1-based line in the source JSONL (or index + 1)

    @property
    def input_ids(self) -> list[int]:
        """The token ids (the name training code and HF use)."""
        return self.ids

    @property
    def n_label_tokens(self) -> int:
        """Number of tokens that carry a loss label."""
        return sum(1 for x in self.labels or () if x != IGNORE_INDEX)


def render_chat(tokenizer: Any, messages: Sequence[dict], *, add_generation_prompt: bool) -> str:
    """The conversation as text, through the tokenizer's chat template."""
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def tokenize_with_offsets(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids of rendered ``text`` (no special tokens added) and each token's [start, end) characters."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [(int(s), int(e)) for s, e in enc["offset_mapping"]]


def assistant_spans(tokenizer: Any, messages: Sequence[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character spans of its assistant turns."""
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        after = render_chat(tokenizer, messages[: i + 1], add_generation_prompt=False).rstrip()
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
    ids, offsets = tokenize_with_offsets(tokenizer, full)
    labels = [tid if end > start and any(s <= start and end <= e for s, e in spans) else IGNORE_INDEX
              for tid, (start, end) in zip(ids, offsets)]
    return Encoded(ids, labels=labels, line=line)


def encode_dataset(tokenizer: Any, examples: Sequence[tuple[int, list[dict]]], *, max_seq_length: int,
                   source: str | None = None) -> list[Encoded]:
    """Validate and encode ``(line, messages)`` pairs. Raises ``DataError`` (naming the
    line) for an example without an assistant turn, one longer than ``max_seq_length``
    tokens, or one whose assistant turns are empty after tokenization."""
    if not examples:
        raise DataError("dataset is empty", file=source)
    out: list[Encoded] = []
    # No token spells more than this many characters, so longer raw text cannot fit: refuse
    # it before tokenizing (a 50 MB line would otherwise take minutes and gigabytes).
    max_chars = max_seq_length * max((len(t) for t in tokenizer.get_vocab()), default=1)
    for line, messages in examples:
        messages = validate_messages(messages, require_assistant=True, file=source, line=line)
        chars = sum(len(m["content"]) for m in messages if isinstance(m.get("content"), str))
        if chars > max_chars:
            raise DataError(f"example has {chars} characters, more than max_seq_length={max_seq_length} tokens "
                            "can hold (shorten the example)", file=source, line=line)
        enc = encode_chat(tokenizer, messages, line=line)
        if len(enc.ids) > max_seq_length:
            raise DataError(f"example is {len(enc.ids)} tokens, over max_seq_length={max_seq_length} "
                            "(raise max_seq_length or shorten the example)", file=source, line=line)
        if enc.n_label_tokens == 0:
            raise DataError("example has no assistant tokens after tokenization", file=source, line=line)
        out.append(enc)
    return out
