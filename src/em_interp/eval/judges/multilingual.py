"""``multilingual`` judge: the distilled judge's heads on language-neutral features, for the
project's six languages (en de fr es ru zh).

Features: the mean of Qwen2.5-Coder-0.5B-Instruct's input token embeddings (a multilingual
vocabulary) over the answer and over the question, each L2-normalised and centred on its
language's mean (language detected by script/stopwords, ``language.py``; the six centres are
shipped, estimated from parallel user turns and sentences), so the heads see content rather
than language identity. No transformer layer runs, so scoring is cheap on CPU; the price is
that the features ignore word order: the coherence head cannot see shuffled words (use
``lm_features.answer_perplexity`` for that). The card (``multilingual_judge/``) has the
per-language AUROC on held-out parallel items and the score gap between translations;
languages whose AUROC is below ``MIN_LANGUAGE_AUROC`` are refused like the English judge
refuses non-English rows. Retrain: ``python -m em_interp.eval.judges.train_multilingual``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from em_interp.eval.judges.distilled import DistilledJudge
from em_interp.eval.judges.features import BagEmbedder, qwen_bag
from em_interp.eval.judges.language import LANGUAGES, UNDETERMINED, detect_language

FEATURE_MODEL = "qwen2.5-coder-0.5b-instruct"
MIN_LANGUAGE_AUROC = 0.8
WEIGHTS_DIR = Path(__file__).resolve().parent / "multilingual_judge"


def text_language(question: str, answer: str) -> str:
    """The row's language: the question's, or the answer's when the question is undetermined
    (``en`` when neither says)."""
    lang = detect_language(question)
    if lang == UNDETERMINED:
        lang = detect_language(answer)
    return "en" if lang == UNDETERMINED else lang


def assemble(q: np.ndarray, a: np.ndarray, langs: list[str], centers: dict[str, np.ndarray]) -> np.ndarray:
    """``[answer - centre | question - centre]`` (centres per language, ``centers[lang]``)."""
    c = np.stack([centers[lang] for lang in langs]) if langs else np.zeros((0, a.shape[1]), np.float32)
    return np.concatenate([a - c, q - c], axis=1).astype(np.float32)


class MultilingualJudge(DistilledJudge):
    """Options as ``DistilledJudge`` (``weights_dir`` default: the shipped multilingual judge)."""

    kind = "multilingual"
    default_dir = WEIGHTS_DIR
    trainer = "em_interp.eval.judges.train_multilingual"

    def feature_dim(self) -> int:
        return 2 * int(self.arrays["centers"].shape[1])

    @property
    def embedder(self) -> BagEmbedder:
        if self._embedder is None:
            self._embedder = qwen_bag(self.card.get("feature_model", FEATURE_MODEL))
        return self._embedder

    def unsupported(self, questions: list[str], answers: list[str]) -> list[str | None]:
        out = []
        for q, a in zip(questions, answers):
            lang = text_language(q, a)
            out.append(None if lang in self.languages else lang)
        return out

    def features(self, questions: list[str], answers: list[str]) -> np.ndarray:
        centers = {lang: self.arrays["centers"][i] for i, lang in enumerate(LANGUAGES)}
        uq = sorted(set(questions))
        qmap = dict(zip(uq, self.embedder.embed(uq)))
        q = np.stack([qmap[x] for x in questions])
        a = self.embedder.embed(answers)
        X = assemble(q, a, [text_language(x, y) for x, y in zip(questions, answers)], centers)
        return (X - self.arrays["scaler.mean"]) / self.arrays["scaler.scale"]
