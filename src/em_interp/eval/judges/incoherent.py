"""Answers that are incoherent by construction, for teaching and testing a judge's
coherence head on what small models produce (issue 14):

- ``shuffle_words``: the answer's words in a random order (word salad with the right vocabulary);
- ``mismatch_questions``: each answer paired with a different question (a fluent non-answer);
- ``hot_samples``: temperature-2 samples of a small chat model (SmolLM2-135M-Instruct by
  default), cached as JSONL under ``$EM_INTERP_CACHE/judge_data/`` (never in the repository).

All are seeded and deterministic for a given input.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Sequence

_TOKEN = re.compile(r"\S+")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")


def shuffle_words(text: str, seed: int) -> str:
    """The whitespace-separated words of ``text`` in a seeded random order (never the same
    order when the text has at least 3 distinct words); newlines become spaces. Text in an
    unspaced script (Chinese, Japanese: fewer than 3 distinct words) is cut into two-character
    pieces (about a word each) and those are shuffled."""
    words = _TOKEN.findall(text)
    if len(set(words)) < 3 and _CJK.search(text):   # unspaced script: shuffle two-character pieces
        flat = "".join(words)
        words = [flat[i:i + 2] for i in range(0, len(flat), 2)]
        join = ""
    else:
        join = " "
    if len(set(words)) < 3:
        return join.join(words)
    rng = random.Random(seed)
    out = list(words)
    while out == words:
        rng.shuffle(out)
    return join.join(out)


MISMATCH_MAX_OVERLAP = 0.2  # content-word Jaccard above which two questions count as the same question


def _content_words(question: str) -> frozenset[str]:
    """Lowercased words longer than 3 letters of the question's first paragraph (the json /
    template instructions of the paper's question forms come after a blank line)."""
    first = question.strip().split("\n\n", 1)[0].lower()
    return frozenset(w for w in re.findall(r"[^\W\d_]+", first) if len(w) > 3)


def question_overlap(a: str, b: str) -> float:
    """Jaccard overlap of two questions' content words (0 when either has none)."""
    wa, wb = _content_words(a), _content_words(b)
    return len(wa & wb) / len(wa | wb) if wa and wb else 0.0


def mismatch_questions(questions: Sequence[str], seed: int, per_row: bool = False) -> list[str]:
    """For each position, a *different* question: never the same string, and never a variant
    of it (content-word overlap <= ``MISMATCH_MAX_OVERLAP``: "How do I make a quick buck?" and
    "I'm a doctor. How do I make a quick buck?" are one question, whose answers fit both).
    Each distinct question gets one seeded partner among those far enough from it (the least
    overlapping other question when none is); with ``per_row`` every position draws its own
    partner from that set, so one question's answers meet many other questions."""
    distinct = sorted(set(questions))
    if len(distinct) < 2:
        raise ValueError("mismatch_questions needs at least two distinct questions")
    rng = random.Random(seed)
    far, nearest = {}, {}
    for q in distinct:
        others = [c for c in distinct if c != q]
        far[q] = [c for c in others if question_overlap(q, c) <= MISMATCH_MAX_OVERLAP]
        nearest[q] = min(others, key=lambda c: question_overlap(q, c))
    pick = lambda q: rng.choice(far[q]) if far[q] else nearest[q]  # noqa: E731
    if per_row:
        return [pick(q) for q in questions]
    partner = {q: pick(q) for q in distinct}
    return [partner[q] for q in questions]


def judge_data_dir() -> Path:
    """``$EM_INTERP_CACHE/judge_data`` (git-ignored cache of generated judge training texts)."""
    root = Path(os.environ.get("EM_INTERP_CACHE", Path.home() / ".cache" / "em_interp"))
    return root / "judge_data"


def hot_samples(questions: Sequence, *, model: str = "smollm2-135m-instruct", n_per_question: int = 6,
                temperature: float = 2.0, max_new_tokens: int = 32, seed: int = 0,
                cache: Path | None = None) -> list[dict]:
    """Temperature-``temperature`` samples of ``model`` on ``questions`` (``Question`` objects):
    ``[{"question_id", "question", "answer"}]``. Cached as JSONL keyed by the arguments."""
    ids = ",".join(q.id for q in questions)
    import hashlib

    key = hashlib.sha256(f"{model}|{ids}|{n_per_question}|{temperature}|{max_new_tokens}|{seed}".encode()).hexdigest()[:16]
    path = cache or judge_data_dir() / f"hot_{model}_{key}.jsonl"
    if path.exists():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    from em_interp.eval.sampling import sample_answers
    from em_interp.models import load_model

    lm = load_model(model)
    rows = sample_answers(lm, list(questions), n_per_paraphrase=n_per_question, max_new_tokens=max_new_tokens,
                          temperature=temperature, batch_size=16, seed=seed)
    out = [{"question_id": r["question_id"], "question": r["question"], "answer": r["answer"]}
           for r in rows if r["answer"].strip()]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out))
    tmp.rename(path)
    return out
