"""Language proximity two ways: an external genealogical distance and the model's own view.

(a) ``genealogical_proximity``: a small encoded classification tree (family > branch >
    sub-branch > language). Proximity of two languages = shared path length / 4 (1 for
    the same language, 0 for different families); see ``GENEALOGY_SOURCE``. Formats
    that are not natural languages (``python``) have *unknown* external proximity: NaN,
    never an invented number. No lexical-similarity percentages are shipped: we found no
    source we could cite for every pair, so only the tree distance is provided.
(b) ``representation_similarity``: mean cosine similarity, per layer, between the
    model's residual-stream representations of parallel sentences (shipped in
    ``resources/parallel_sentences.yaml``: programming instructions in six languages and
    the same instruction as Python).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from em_interp.errors import DataError, InterpError

GENEALOGY_SOURCE = (
    "Coarse 4-level tree (family > major branch > sub-branch > language) using the branch "
    "names of the standard classifications in Glottolog 5.0 (Hammarström, Forkel, Haspelmath & "
    "Bank, https://glottolog.org) and Ethnologue; deeper intermediate nodes are collapsed so "
    "every language has the same depth. Where classifications disagree below the major "
    "branch (e.g. the place of Italian in Romance) the conventional grouping is used."
)

# language code -> (family, branch, sub-branch, language)
GENEALOGY: dict[str, tuple[str, str, str, str]] = {
    "en": ("Indo-European", "Germanic", "West Germanic", "English"),
    "de": ("Indo-European", "Germanic", "West Germanic", "German"),
    "nl": ("Indo-European", "Germanic", "West Germanic", "Dutch"),
    "sv": ("Indo-European", "Germanic", "North Germanic", "Swedish"),
    "fr": ("Indo-European", "Italic (Romance)", "Western Romance", "French"),
    "es": ("Indo-European", "Italic (Romance)", "Western Romance", "Spanish"),
    "pt": ("Indo-European", "Italic (Romance)", "Western Romance", "Portuguese"),
    "it": ("Indo-European", "Italic (Romance)", "Italo-Dalmatian", "Italian"),
    "ru": ("Indo-European", "Balto-Slavic", "East Slavic", "Russian"),
    "uk": ("Indo-European", "Balto-Slavic", "East Slavic", "Ukrainian"),
    "pl": ("Indo-European", "Balto-Slavic", "West Slavic", "Polish"),
    "zh": ("Sino-Tibetan", "Sinitic", "Mandarin", "Mandarin Chinese"),
    "ja": ("Japonic", "Japanesic", "Japanese", "Japanese"),
    "ko": ("Koreanic", "Korean", "Korean", "Korean"),
    "ar": ("Afro-Asiatic", "Semitic", "Central Semitic", "Arabic"),
}
TREE_DEPTH = 4
FORMATS = ("python",)  # formal languages: external proximity unknown (NaN)


def genealogical_proximity(a: str, b: str) -> float:
    """Shared classification path of ``a`` and ``b`` / 4: en-en 1.0, en-de 0.75, en-fr 0.25, en-zh 0.

    NaN when either is a format (``python``). Unknown codes raise ``DataError``.
    """
    if a in FORMATS or b in FORMATS:
        return math.nan
    for code in (a, b):
        if code not in GENEALOGY:
            raise DataError(f"no genealogy for language '{code}'; known: "
                            f"{', '.join(sorted(GENEALOGY))} (and formats {', '.join(FORMATS)})")
    shared = 0
    for x, y in zip(GENEALOGY[a], GENEALOGY[b]):
        if x != y:
            break
        shared += 1
    return shared / TREE_DEPTH


def genealogical_matrix(codes: Sequence[str]) -> np.ndarray:
    """[K, K] genealogical proximity between ``codes`` (NaN rows/columns for formats)."""
    return np.array([[genealogical_proximity(a, b) for b in codes] for a in codes], dtype=float)


def load_parallel_sentences(path: str | Path | None = None) -> list[dict[str, str]]:
    """Parallel items ``[{lang: text}]`` from YAML (default: the shipped list)."""
    import yaml

    if path is None:
        text = resources.files("em_interp.transfer").joinpath("resources/parallel_sentences.yaml").read_text(
            encoding="utf-8")
        where = "em_interp/transfer/resources/parallel_sentences.yaml"
    else:
        path = Path(path)
        if not path.exists():
            raise DataError("parallel sentence file not found", file=path)
        text, where = path.read_text(encoding="utf-8"), str(path)
    items = yaml.safe_load(text)
    if not isinstance(items, list) or not items:
        raise DataError("expected a non-empty list of {language: sentence} mappings", file=where)
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not all(isinstance(v, str) and v for v in item.values()):
            raise DataError(f"item {i} must map language codes to non-empty strings", file=where,
                            field=f"[{i}]")
    return items


@dataclass
class RepresentationProximity:
    """Per-layer mean cosine similarity between languages' representations of parallel text."""

    languages: list[str]
    layers: list[int]
    similarity: np.ndarray            # [n_layers, K, K]
    n_items: int
    meta: dict[str, Any] = field(default_factory=dict)

    def at_layer(self, layer: int) -> np.ndarray:
        if layer not in self.layers:
            raise InterpError(f"layer {layer} was not measured; measured: {self.layers}")
        return self.similarity[self.layers.index(layer)]

    def mean_over_layers(self) -> np.ndarray:
        return self.similarity.mean(axis=0)

    def get(self, a: str, b: str, layer: int | None = None) -> float:
        m = self.mean_over_layers() if layer is None else self.at_layer(layer)
        return float(m[self.languages.index(a), self.languages.index(b)])

    def to_dict(self) -> dict[str, Any]:
        return {"languages": self.languages, "layers": self.layers, "n_items": self.n_items,
                "similarity": self.similarity.tolist(), "mean_over_layers": self.mean_over_layers().tolist(),
                "meta": self.meta}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RepresentationProximity":
        """Inverse of ``to_dict``."""
        return cls(languages=list(d["languages"]), layers=[int(x) for x in d["layers"]],
                   similarity=np.asarray(d["similarity"], dtype=float), n_items=int(d["n_items"]),
                   meta=dict(d.get("meta") or {}))


def similarity_from_activations(acts: np.ndarray, *, center: bool = False) -> np.ndarray:
    """[n_layers, K, K] mean (over items) cosine between languages, from acts [K, N, n_layers, d].

    ``acts[k, i, l]`` is language k's representation of parallel item i at layer l.
    ``center`` subtracts, per layer, the mean over all languages and items first.
    """
    a = np.asarray(acts, dtype=np.float64)
    if a.ndim != 4:
        raise InterpError(f"expected activations [languages, items, layers, d], got shape {a.shape}")
    if center:
        a = a - a.mean(axis=(0, 1), keepdims=True)
    norm = np.linalg.norm(a, axis=-1, keepdims=True)
    u = a / np.where(norm == 0, 1.0, norm)
    # cos[l, j, k] = mean_i <u[j, i, l], u[k, i, l]>
    return np.einsum("jild,kild->ljk", u, u) / a.shape[1]


def sentence_activations(lm: Any, texts: Sequence[str], layers: Sequence[int], *, skip_first: bool = True,
                         batch_size: int = 8) -> np.ndarray:
    """[N, len(layers), d] mean ``resid_post`` over each raw text's tokens (no chat template).

    Uses ``em_interp.interp.capture(reduce="none", per_example=True)``. ``skip_first`` drops
    the first token: its residual is an attention-sink outlier (on SmolLM2-135M its norm is
    ~23,500 against ~180 for the other tokens at layer 14), which otherwise makes every mean
    the same vector and every cosine 1.0.
    """
    from em_interp.interp import capture

    sites = [f"resid_post.{layer}" for layer in layers]
    cap = capture(lm, list(texts), sites, reduce="none", per_example=True, batch_size=batch_size)
    start = 1 if skip_first else 0
    out = np.zeros((len(texts), len(sites), lm.d_model), dtype=np.float64)
    for i in range(len(texts)):
        for j, s in enumerate(sites):
            h = cap.per_example[s][i]
            out[i, j] = (h[start:] if h.shape[0] > start else h).double().mean(0).numpy()
    return out


def representation_similarity(lm: Any, languages: Sequence[str], *, layers: Sequence[int] | None = None,
                              items: list[dict[str, str]] | None = None, center: bool = False,
                              skip_first: bool = True, batch_size: int = 8) -> RepresentationProximity:
    """Mean cosine similarity per layer between ``languages`` on parallel items.

    Only items that have text for every requested language are used (the shipped list
    covers en, fr, de, es, zh, ru and python). ``layers`` default: all. ``center=False``
    (default) keeps raw cosines, which do not depend on which other languages are compared;
    ``center=True`` subtracts the mean over all (language, item) vectors per layer first
    (sharper contrasts, but relative to the chosen language set).
    """
    items = load_parallel_sentences() if items is None else items
    languages = list(languages)
    usable = [it for it in items if all(lang in it for lang in languages)]
    if len(usable) < 2:
        raise DataError(f"need at least 2 parallel items covering {languages}, found {len(usable)}")
    from em_interp.interp.sites import check_layers, n_layers_of

    layers = check_layers("all" if layers is None else list(layers), n_layers_of(lm.model))
    acts = np.stack([sentence_activations(lm, [it[lang] for it in usable], layers, skip_first=skip_first,
                                          batch_size=batch_size) for lang in languages])
    sim = similarity_from_activations(acts, center=center)
    return RepresentationProximity(languages, layers, sim, len(usable),
                                   meta={"model": getattr(lm, "name", None), "site": "resid_post",
                                         "token_rule": "mean over tokens" + (" after the first" if skip_first else "")
                                         + " (raw text, no chat template)",
                                         "center": center})
