"""Per-site logistic probes (misaligned vs aligned), cross-validated without leakage, saved
without pickles.

``train_probes(pos, neg, groups=..., texts=...)`` takes per-example activations
(``{site: Tensor[n, d]}``, e.g. ``capture(..., per_example=True).per_example``) and fits one
standardised scikit-learn ``LogisticRegression`` per site. Folds are grouped by question
(``StratifiedGroupKFold``: no question sits in both a training and a test fold; answers to
one question share wording, so plain k-fold over answers inflates accuracy). Scores are
out-of-fold balanced accuracy and AUROC, next to baselines on the *same folds*: the
majority class, a bag-of-words probe on the answer text and the layer-0 probe.
``probe_inputs(pos_examples, neg_examples)`` derives groups, texts and generating models
from chat examples. ``ProbeSet.curve()`` returns the data that
``em_interp.report.figures.probe_accuracy`` draws (the one figure module).
``save_probes`` writes ``probes.safetensors`` (coef, scaler mean/scale per site) and
``probes.json`` (metadata, scores, baselines); ``load_probes`` reads them back into
``Probe`` objects that predict with plain torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from em_interp.errors import InterpError

CV_SCHEMES = ("group", "stratified")
CHANCE = 0.5  # balanced accuracy (and AUROC) of any constant or label-blind predictor


@dataclass
class Probe:
    """A linear probe on one site: ``p(positive) = sigmoid(((x - mean) / scale) @ coef + intercept)``."""

    site: str
    coef: Any            # Tensor[d]
    intercept: float
    mean: Any            # Tensor[d]
    scale: Any           # Tensor[d]
    cv_accuracy: float = float("nan")
    cv_std: float = float("nan")
    train_accuracy: float = float("nan")
    n_pos: int = 0
    n_neg: int = 0
    cv_balanced_accuracy: float = float("nan")
    cv_balanced_std: float = float("nan")
    cv_auroc: float = float("nan")

    @property
    def layer(self) -> int:
        """The layer index of the site (``resid_post.7`` -> 7)."""
        return int(self.site.rsplit(".", 1)[1])

    def decision(self, x):
        """Logit of the positive class for activations ``x`` [n, d]."""
        return ((x.float() - self.mean) / self.scale) @ self.coef + self.intercept

    def predict_proba(self, x):
        """P(positive) for activations ``x``."""
        import torch

        return torch.sigmoid(self.decision(x))

    def predict(self, x):
        """Boolean prediction (decision > 0)."""
        return self.decision(x) > 0


@dataclass
class ProbeSet:
    """Probes for several sites, shared metadata (model, CV scheme...) and same-fold baselines."""

    probes: dict[str, Probe]
    meta: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)

    def accuracy_by_layer(self, metric: str = "balanced_accuracy") -> list[tuple[int, float, float]]:
        """``[(layer, score, std over folds)]``; metric ``balanced_accuracy`` | ``accuracy`` | ``auroc``."""
        pick = {"balanced_accuracy": lambda p: (p.cv_balanced_accuracy, p.cv_balanced_std),
                "accuracy": lambda p: (p.cv_accuracy, p.cv_std), "auroc": lambda p: (p.cv_auroc, float("nan"))}
        if metric not in pick:
            raise InterpError(f"unknown probe metric '{metric}'; valid: {', '.join(pick)}", field="metric")
        return sorted((p.layer, *pick[metric](p)) for p in self.probes.values())

    def best(self) -> Probe:
        """The probe with the highest cross-validated balanced accuracy."""
        return max(self.probes.values(), key=lambda p: p.cv_balanced_accuracy)

    def curve(self, metric: str = "balanced_accuracy") -> dict[str, Any]:
        """Per-layer scores and same-fold baselines as ``report.figures.probe_accuracy`` arguments."""
        rows = self.accuracy_by_layer(metric)
        layers = [r[0] for r in rows]
        acc = {"probe": [r[1] for r in rows]}
        for b in self.baselines.values():
            if b.get(metric) is not None:
                acc[b["label"]] = [b[metric]] * len(layers)
        return {"layers": layers, "accuracy": acc, "std": {"probe": [r[2] for r in rows]}, "chance": CHANCE,
                "title": f"Probe {metric.replace('_', ' ')} by layer ({self.meta.get('cv', 'cv')})"}


def _last(messages: Any, role: str) -> str | None:
    if isinstance(messages, list):
        for m in reversed(messages):
            if isinstance(m, dict) and m.get("role") == role:
                return str(m.get("content", ""))
    return None


def _messages(example: Any) -> Any:
    if isinstance(example, dict):
        return example.get("messages")
    return getattr(example, "messages", example if isinstance(example, list) else None)


def question_groups(examples: Sequence[Any]) -> list[str]:
    """Fold group of each example: ``meta.question_id``, else the last user message, else the text."""
    out = []
    for ex in examples:
        meta = ex.get("meta") if isinstance(ex, dict) else None
        if isinstance(meta, dict) and meta.get("question_id") is not None:
            out.append(f"id:{meta['question_id']}")
        else:
            q = _last(_messages(ex), "user")
            out.append(f"q:{q}" if q is not None else f"text:{ex}")
    return out


def response_texts(examples: Sequence[Any]) -> list[str]:
    """The answer text of each example (last assistant message; a raw string as is)."""
    out = []
    for ex in examples:
        a = _last(_messages(ex), "assistant")
        out.append(a if a is not None else str(ex))
    return out


def probe_inputs(pos_examples: Sequence[Any], neg_examples: Sequence[Any]) -> dict[str, Any]:
    """``groups``, ``texts`` and ``models`` keyword arguments of ``train_probes`` from chat examples."""
    def models(exs: Sequence[Any]) -> list[str | None]:
        return [((ex.get("meta") or {}).get("model_key") if isinstance(ex, dict) else None) for ex in exs]

    return {"groups": (question_groups(pos_examples), question_groups(neg_examples)),
            "texts": (response_texts(pos_examples), response_texts(neg_examples)),
            "models": (models(pos_examples), models(neg_examples))}


def cv_folds(y: np.ndarray, groups: Sequence[str] | None, folds: int, seed: int,
             scheme: str = "group") -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(train_idx, test_idx)]``: grouped (no group in two folds) and class-stratified, or
    plain stratified over answers (``scheme="stratified"``, for leakage demonstrations)."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if scheme not in CV_SCHEMES:
        raise InterpError(f"unknown cv scheme '{scheme}'; valid: {', '.join(CV_SCHEMES)}", field="cv")
    n_min = int(min(y.sum(), len(y) - y.sum()))
    if scheme == "stratified":
        k = min(folds, n_min)
        if k < 2:
            raise InterpError(f"need at least 2 examples per class for cross-validation, got {n_min}",
                              field="examples")
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))
    if groups is None or len(groups) != len(y):
        raise InterpError("grouped cross-validation needs one group (question) per example", field="groups")
    codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)[1].reshape(-1)
    k = min(folds, int(codes.max()) + 1, n_min)
    if k < 2:
        raise InterpError(f"grouped cross-validation needs at least 2 questions and 2 examples per class; got "
                          f"{int(codes.max()) + 1} question(s), {n_min} in the smaller class", field="groups")
    return list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y, codes))


def _oof_scores(make: Callable[[], Any], X: Any, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
                ) -> dict[str, float]:
    """Out-of-fold accuracy, balanced accuracy (pooled; std over folds) and AUROC."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    prob = np.zeros(len(y))
    per_fold, per_fold_acc = [], []
    for tr, te in folds:
        ytr = y[tr]
        if ytr.min() == ytr.max():  # one class in training: a constant predictor
            prob[te] = float(ytr[0])
        else:
            model = make().fit(X[tr], ytr)
            prob[te] = model.predict_proba(X[te])[:, 1]
        pred = prob[te] > 0.5
        per_fold_acc.append(float((pred == y[te]).mean()))
        if y[te].min() != y[te].max():
            per_fold.append(float(balanced_accuracy_score(y[te], pred)))
    pred = prob > 0.5
    return {"accuracy": float((pred == y).mean()), "accuracy_std": float(np.std(per_fold_acc)),
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "balanced_std": float(np.std(per_fold)) if per_fold else float("nan"),
            "auroc": float(roc_auc_score(y, prob))}


def _majority(y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, Any]:
    pred = np.zeros(len(y), dtype=bool)
    for tr, te in folds:
        pred[te] = y[tr].mean() >= 0.5
    return {"label": "majority class", "accuracy": float((pred == y).mean()), "balanced_accuracy": CHANCE,
            "auroc": CHANCE}


def _logreg(C: float, seed: int) -> Callable[[], Any]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return lambda: make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))


def _bag_of_words(seed: int) -> Callable[[], Any]:
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return lambda: make_pipeline(CountVectorizer(binary=True, lowercase=True),
                                 LogisticRegression(C=1.0, max_iter=2000, random_state=seed))


def _pair(value: Any, n_pos: int, n_neg: int, name: str) -> list | None:
    if value is None:
        return None
    p, n = value
    if len(p) != n_pos or len(n) != n_neg:
        raise InterpError(f"{name} has {len(p)}/{len(n)} entries for {n_pos}/{n_neg} examples", field=name)
    return list(p) + list(n)


def train_probes(pos: Mapping[str, Any], neg: Mapping[str, Any], *, groups: tuple[Sequence[str], Sequence[str]] | None = None,
                 texts: tuple[Sequence[str], Sequence[str]] | None = None,
                 models: tuple[Sequence[Any], Sequence[Any]] | None = None, pool_models: bool = False,
                 folds: int = 5, C: float = 1.0, seed: int = 0, cv: str | None = None,
                 meta: dict | None = None) -> ProbeSet:
    """Fit one probe per site (``pos`` = positive class) with out-of-fold scores and baselines on the same folds.

    ``groups``: (pos, neg) question ids, for folds grouped by question (``cv="group"``, the
    default when groups are given; without them plain stratified folds are used and the
    result is flagged in ``meta["cv_warning"]``). ``texts``: (pos, neg) answer texts for the
    bag-of-words baseline. ``models``: (pos, neg) generating-model keys; answers of several
    models are refused unless ``pool_models=True``.
    """
    import torch

    if set(pos) != set(neg):
        raise InterpError(f"positive and negative activations cover different sites: {sorted(pos)} vs {sorted(neg)}")
    if not pos:
        raise InterpError("no sites to probe", field="sites")
    n_pos, n_neg = (len(next(iter(d.values()))) for d in (pos, neg))
    if min(n_pos, n_neg) < 2:
        raise InterpError(f"need at least 2 examples per class for cross-validation, "
                          f"got {n_pos} positive and {n_neg} negative", field="examples")
    y = np.concatenate([np.ones(n_pos), np.zeros(n_neg)]).astype(int)
    g = _pair(groups, n_pos, n_neg, "groups")
    t = _pair(texts, n_pos, n_neg, "texts")
    m = _pair(models, n_pos, n_neg, "models")
    distinct = sorted({str(x) for x in m if x is not None}) if m else []
    if len(distinct) > 1 and not pool_models:
        raise InterpError(f"answers from {len(distinct)} models ({', '.join(distinct)}) in one probe set; "
                          "fit one probe set per model, or pass pool_models=True to pool them", field="models")
    scheme = cv or ("group" if g is not None else "stratified")
    fold_idx = cv_folds(y, g, folds, seed, scheme)
    info: dict[str, Any] = {"cv": ("StratifiedGroupKFold by question" if scheme == "group"
                                   else "StratifiedKFold over answers"),
                            "n_folds": len(fold_idx), "n_groups": len(set(g)) if g is not None else None,
                            "metric": "out-of-fold balanced accuracy (AUROC beside)", "chance": CHANCE,
                            "models": distinct, "pooled_models": len(distinct) > 1}
    if scheme == "stratified":
        info["cv_warning"] = ("folds over answers, not questions: answers to one question can sit in training "
                              "and test folds, so accuracy may be inflated")
    baselines: dict[str, dict[str, Any]] = {"majority": _majority(y, fold_idx)}
    if t is not None:
        baselines["bag_of_words"] = {"label": "bag of words (answer text)",
                                     **_oof_scores(_bag_of_words(seed), np.asarray(t, dtype=object), y, fold_idx)}
    make = _logreg(C, seed)
    probes = {}
    for site in pos:
        P, N = pos[site].float().numpy(), neg[site].float().numpy()
        X = np.concatenate([P, N])
        sc = _oof_scores(make, X, y, fold_idx)
        pipe = make().fit(X, y)
        scaler, clf = pipe[0], pipe[1]
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        probes[site] = Probe(site=site, coef=torch.tensor(clf.coef_[0], dtype=torch.float32),
                             intercept=float(clf.intercept_[0]), mean=torch.tensor(scaler.mean_, dtype=torch.float32),
                             scale=torch.tensor(scale, dtype=torch.float32), cv_accuracy=sc["accuracy"],
                             cv_std=sc["accuracy_std"], train_accuracy=float(pipe.score(X, y)),
                             n_pos=n_pos, n_neg=n_neg, cv_balanced_accuracy=sc["balanced_accuracy"],
                             cv_balanced_std=sc["balanced_std"], cv_auroc=sc["auroc"])
    zero = next((p for p in probes.values() if p.layer == 0), None)
    if zero is not None:
        baselines["layer0"] = {"label": f"layer-0 probe ({zero.site})", "accuracy": zero.cv_accuracy,
                               "balanced_accuracy": zero.cv_balanced_accuracy, "auroc": zero.cv_auroc}
    return ProbeSet(probes, dict(meta or {}, folds=folds, C=C, seed=seed, **info), baselines)


def _no_nan(obj: Any) -> Any:
    """NaN floats -> None, recursively (strict JSON)."""
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_no_nan(v) for v in obj]
    return obj


def save_probes(probe_set: ProbeSet, out_dir: str | Path) -> Path:
    """Write ``probes.safetensors`` + ``probes.json`` into ``out_dir``; returns the folder."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    rows = []
    for site, p in probe_set.probes.items():
        tensors[f"{site}.coef"] = p.coef.contiguous()
        tensors[f"{site}.mean"] = p.mean.contiguous()
        tensors[f"{site}.scale"] = p.scale.contiguous()
        rows.append({"site": site, "layer": p.layer, "intercept": p.intercept, "cv_accuracy": p.cv_accuracy,
                     "cv_std": p.cv_std, "train_accuracy": p.train_accuracy, "n_pos": p.n_pos, "n_neg": p.n_neg,
                     "cv_balanced_accuracy": p.cv_balanced_accuracy, "cv_balanced_std": p.cv_balanced_std,
                     "cv_auroc": p.cv_auroc})
    save_file(tensors, str(out / "probes.safetensors"))
    doc = _no_nan({"meta": probe_set.meta, "baselines": probe_set.baselines, "probes": rows})
    (out / "probes.json").write_text(json.dumps(doc, indent=2, default=str))
    return out


def load_probes(folder: str | Path) -> ProbeSet:
    """Read a folder written by ``save_probes``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    js, st = folder / "probes.json", folder / "probes.safetensors"
    for f in (js, st):
        if not f.exists():
            raise InterpError("probe file not found", file=f)
    data = json.loads(js.read_text())
    tensors = load_file(str(st))
    probes = {}
    for i, row in enumerate(data.get("probes", [])):
        site = row["site"]
        try:
            probes[site] = Probe(site=site, coef=tensors[f"{site}.coef"], intercept=float(row["intercept"]),
                                 mean=tensors[f"{site}.mean"], scale=tensors[f"{site}.scale"],
                                 n_pos=row["n_pos"], n_neg=row["n_neg"],
                                 **{k: float("nan") if row.get(k) is None else float(row[k])
                                    for k in ("cv_accuracy", "cv_std", "train_accuracy", "cv_balanced_accuracy",
                                              "cv_balanced_std", "cv_auroc")})
        except KeyError as exc:
            raise InterpError(f"probe {site} is missing {exc}", file=js, field=f"probes[{i}]") from None
    return ProbeSet(probes, data.get("meta", {}), data.get("baselines", {}))
