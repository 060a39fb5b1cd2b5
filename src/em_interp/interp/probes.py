"""Per-site logistic probes (misaligned vs aligned), cross-validated, saved without pickles.

``train_probes(pos, neg)`` takes per-example activations (``{site: Tensor[n, d]}``, e.g.
``capture(..., per_example=True).per_example``) and fits one standardised scikit-learn
``LogisticRegression`` per site, reporting k-fold accuracy. ``save_probes`` writes
``probes.safetensors`` (coef, intercept, scaler mean/scale per site) and ``probes.json``
(metadata + accuracies); ``load_probes`` reads them back into ``Probe`` objects that
predict with plain torch. ``plot_probe_accuracy`` draws accuracy by layer (PNG).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from em_interp.errors import InterpError


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

    @property
    def layer(self) -> int:
        return int(self.site.rsplit(".", 1)[1])

    def decision(self, x):
        return ((x.float() - self.mean) / self.scale) @ self.coef + self.intercept

    def predict_proba(self, x):
        import torch

        return torch.sigmoid(self.decision(x))

    def predict(self, x):
        return self.decision(x) > 0


@dataclass
class ProbeSet:
    """Probes for several sites plus shared metadata (model, reduce, data hash...)."""

    probes: dict[str, Probe]
    meta: dict[str, Any] = field(default_factory=dict)

    def accuracy_by_layer(self) -> list[tuple[int, float, float]]:
        return sorted((p.layer, p.cv_accuracy, p.cv_std) for p in self.probes.values())

    def best(self) -> Probe:
        return max(self.probes.values(), key=lambda p: p.cv_accuracy)


def train_probes(pos: Mapping[str, Any], neg: Mapping[str, Any], *, folds: int = 5, C: float = 1.0,
                 seed: int = 0, meta: dict | None = None) -> ProbeSet:
    """Fit one probe per site (``pos`` = positive class, e.g. misaligned) with k-fold CV accuracy."""
    import numpy as np
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if set(pos) != set(neg):
        raise InterpError(f"positive and negative activations cover different sites: {sorted(pos)} vs {sorted(neg)}")
    probes = {}
    for site in pos:
        P, N = pos[site].float().numpy(), neg[site].float().numpy()
        k = min(folds, len(P), len(N))
        if k < 2:
            raise InterpError(f"site {site}: need at least 2 examples per class for cross-validation, "
                              f"got {len(P)} positive and {len(N)} negative", field="examples")
        X = np.concatenate([P, N])
        y = np.concatenate([np.ones(len(P)), np.zeros(len(N))])
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
        scores = cross_val_score(pipe, X, y, cv=StratifiedKFold(k, shuffle=True, random_state=seed))
        pipe.fit(X, y)
        scaler, clf = pipe[0], pipe[1]
        scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
        probes[site] = Probe(site=site, coef=torch.tensor(clf.coef_[0], dtype=torch.float32),
                             intercept=float(clf.intercept_[0]), mean=torch.tensor(scaler.mean_, dtype=torch.float32),
                             scale=torch.tensor(scale, dtype=torch.float32), cv_accuracy=float(scores.mean()),
                             cv_std=float(scores.std()), train_accuracy=float(pipe.score(X, y)),
                             n_pos=len(P), n_neg=len(N))
    return ProbeSet(probes, dict(meta or {}, folds=folds, C=C, seed=seed))


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
                     "cv_std": p.cv_std, "train_accuracy": p.train_accuracy, "n_pos": p.n_pos, "n_neg": p.n_neg})
    save_file(tensors, str(out / "probes.safetensors"))
    (out / "probes.json").write_text(json.dumps({"meta": probe_set.meta, "probes": rows}, indent=2, default=str))
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
                                 cv_accuracy=row["cv_accuracy"], cv_std=row["cv_std"],
                                 train_accuracy=row["train_accuracy"], n_pos=row["n_pos"], n_neg=row["n_neg"])
        except KeyError as exc:
            raise InterpError(f"probe {site} is missing {exc}", file=js, field=f"probes[{i}]") from None
    return ProbeSet(probes, data.get("meta", {}))


def plot_probe_accuracy(results: ProbeSet | Sequence[tuple[int, float, float]], path: str | Path, *,
                        title: str = "Probe accuracy by layer (misaligned vs aligned)",
                        chance: float | None = 0.5) -> Path:
    """Cross-validated probe accuracy by layer (mean ± std over folds) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results.accuracy_by_layer() if isinstance(results, ProbeSet) else sorted(results)
    if not rows:
        raise InterpError("no probe results to plot")
    layers = [r[0] for r in rows]
    acc = [r[1] for r in rows]
    std = [r[2] for r in rows]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.errorbar(layers, acc, yerr=std, marker="o", capsize=3, label="k-fold CV accuracy")
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xlabel("layer (resid_post)")
    ax.set_ylabel("accuracy (fraction correct)")
    ax.set_ylim(0.0, 1.05)
    ax.set_title(title)
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
