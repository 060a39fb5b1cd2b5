"""Judges whose features are a causal chat model's hidden states over the answer: the ``hand``
and ``multilingual`` judges.

Features (``hidden_features``), from a forward pass of the card's feature model (the base model,
never a finetune) over the chat-templated question and the answer's first ``max_answer_tokens``
tokens, stopped after the deepest layer used (``lm_features.answer_hidden``): optionally the
lexical statistics of ``features.lexical_features`` (English-script statistics: off for the
multilingual judge), then the L2-normalised mean hidden state over the answer's tokens at each of
the card's layers. The question is in the model's context, so the answer's states carry whether
it answers *this* question. Heads and the share calibration are ``DistilledJudge``'s layout.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from em_interp.eval.judges.distilled import DistilledJudge
from em_interp.eval.judges.features import N_TEXT_LEXICAL, lexical_features


def hidden_feature_dim(layers: Sequence[int], d_model: int, lexical: bool = True) -> int:
    """Length of ``hidden_features``' rows: the text lexical statistics (if used), one hidden
    state per layer."""
    return (N_TEXT_LEXICAL if lexical else 0) + len(layers) * d_model


def assemble_hidden(hidden: np.ndarray, answers: Sequence[str], lexical: bool = True) -> np.ndarray:
    """``[lexical | hidden states, each layer's L2-normalised]`` from ``answer_hidden`` output."""
    n = len(answers)
    h = (hidden / np.maximum(np.linalg.norm(hidden, axis=-1, keepdims=True), 1e-8)).reshape(n, -1)
    if not lexical:
        return h.astype(np.float32)
    lex = np.stack([lexical_features(a) for a in answers]) if n else np.zeros((0, N_TEXT_LEXICAL), np.float32)
    return np.concatenate([lex, h], axis=1).astype(np.float32)


def hidden_features(lm, questions: Sequence[str], answers: Sequence[str], layers: Sequence[int], *,
                    max_answer_tokens: int, lexical: bool = True, batch_size: int = 8) -> np.ndarray:
    """Unscaled feature rows of ``(question, answer)`` pairs under ``lm`` (the feature model); the
    forward pass stops after the deepest of ``layers`` (``lm_features.answer_hidden``)."""
    from em_interp.eval.judges.lm_features import answer_hidden

    hidden = answer_hidden(lm, list(zip(questions, answers)), list(layers), max_answer_tokens=max_answer_tokens,
                           batch_size=batch_size)
    return assemble_hidden(hidden, answers, lexical)


class HiddenStateJudge(DistilledJudge):
    """A ``DistilledJudge`` on ``hidden_features`` (the card's ``features``: ``layers``,
    ``d_model``, ``max_answer_tokens``, ``lexical``). The feature model loads on first use
    (``device``)."""

    def feature_dim(self) -> int:
        f = self.card["features"]
        return hidden_feature_dim(f["layers"], int(f["d_model"]), bool(f.get("lexical", True)))

    @property
    def embedder(self):
        """The feature model (a ``LoadedModel``), loaded once."""
        if self._embedder is None:
            from em_interp.models import load_model

            self._embedder = load_model(self.card["feature_model"], device=self._device)
        return self._embedder

    def features(self, questions: list[str], answers: list[str]) -> np.ndarray:
        f = self.card["features"]
        X = hidden_features(self.embedder, questions, answers, f["layers"], max_answer_tokens=int(f["max_answer_tokens"]),
                            lexical=bool(f.get("lexical", True)))
        return (X - self.arrays["scaler.mean"]) / self.arrays["scaler.scale"]
