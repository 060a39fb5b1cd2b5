"""Do finetunes move a model along the same direction? (convergence, Model Organisms, issue 13 item 4)

A finetune's direction here is its **model diff**: the finetuned model's activation minus the
base model's, on the same texts, per example (``finetune_diffs``); its mean over the texts is
``model_diff_direction``'s vector. Model diffs need no misaligned answers of the finetune's own,
so a matched control (MO's good_medical_advice) and an organism with no EM get a direction too.

``compare_finetunes`` turns the per-example diffs into the cosine table between finetunes, per
layer, with what a reader needs to trust it:

- a **percentile cluster bootstrap** over the text groups (the questions the texts answer: texts
  to one question are correlated, so questions are resampled, never single texts), every
  finetune resampled with the same draw;
- a **split-half reliability** per finetune (its diff on two disjoint halves of each group's
  texts): a cosine between two finetunes can be no cleaner than each finetune against itself;
- **contrasts**: ``{"bad-good": ("bad_medical", "good_medical")}`` adds the difference of two
  diffs on the same texts (what the bad answers taught beyond what the control's format taught).
  Without a matched control a high cosine may be nothing but the shared finetuning direction;
- ``outside`` vectors (another method's direction, a persona vector): their cosine with each
  finetune's diff, with the same bootstrap.

Random unit vectors in ``d`` dimensions have ``E|cos| = sqrt(2 / (pi d))`` (recorded as
``random_abs_cos``) — the floor against which a cosine is read.
"""

from __future__ import annotations

import functools
import math
import types
from typing import Any, Mapping, Sequence

import numpy as np

from em_interp.errors import InterpError
from em_interp.eval.stats import cluster_bootstrap_weights

CI_METHOD = ("percentile cluster bootstrap over text groups (questions; eval.stats.cluster_bootstrap_weights); every "
             "finetune resampled with the same draw")


def finetune_diffs(base: Any, finetuned: Mapping[str, Any], examples: Sequence[Any], *, layers: Any = "all",
                   site_kind: str = "resid_post", tokens: str | None = None, batch_size: int = 8,
                   progress: bool | None = None) -> tuple[list[int], dict[str, np.ndarray]]:
    """Per-example model diffs: ``{name: [n_layers, n_examples, d]}`` float32 arrays of
    finetuned-minus-base activations (``tokens``-reduced, e.g. the response mean) on the same
    ``examples``; returns ``(layers, diffs)``. ``finetuned``: ``{name: model}`` (any model handle,
    or a zero-argument function that loads one: it is called when its turn comes and dropped
    after, so one finetune at a time is in memory), each with the base's layer count. The base is
    captured once."""
    from em_interp.interp.capture import capture
    from em_interp.interp.handles import as_model
    from em_interp.interp.inputs import resolve_tokens
    from em_interp.interp.sites import check_layers

    if not finetuned:
        raise InterpError("no finetuned models to compare", field="finetuned")
    tokens = resolve_tokens(tokens)
    n_layers = as_model(base).n_layers
    layer_list = check_layers(layers, n_layers)
    sites = [f"{site_kind}.{layer}" for layer in layer_list]
    kw = dict(tokens=tokens, batch_size=batch_size, progress=progress, per_example=True)

    def acts(lm: Any, desc: str) -> np.ndarray:
        cap = capture(lm, examples, sites, desc=desc, **kw)
        return np.stack([cap.per_example[cap.aliases.get(s, s)].float().numpy() for s in sites])

    base_acts = acts(base, "capture base")
    out = {}
    for name, lm in finetuned.items():
        if isinstance(lm, (types.FunctionType, functools.partial)):
            lm = lm()
        if as_model(lm).n_layers != n_layers:
            raise InterpError(f"finetune {name!r} has {as_model(lm).n_layers} layers, the base {n_layers}",
                              field="finetuned")
        out[name] = acts(lm, f"capture {name}") - base_acts
        del lm
    return layer_list, out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-30)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (_unit(a) * _unit(b)).sum(-1)


def compare_finetunes(diffs: Mapping[str, Any], groups: Sequence[Any], *, layers: Sequence[int] | None = None,
                      contrasts: Mapping[str, tuple[str, str]] | None = None,
                      outside: Mapping[str, Mapping[int, Any]] | None = None, n_boot: int = 1000,
                      level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Cosine table between finetunes' model diffs, per layer, with cluster-bootstrap intervals.

    ``diffs``: ``{name: [n_layers, n, d]}`` per-example diffs on the **same** ``n`` texts
    (``finetune_diffs``); ``groups``: one group label per text (the question it answers), the
    bootstrap's cluster; ``layers``: the layer index of each of the ``n_layers`` rows (default
    ``0..n_layers-1``); ``contrasts``: ``{label: (a, b)}`` adds ``diff[a] - diff[b]``;
    ``outside``: ``{label: {layer: [d] vector}}`` directions from elsewhere, compared with every
    diff at the layers they have. Returns a JSON-able dict: ``names``, ``layers`` (``{layer:
    {"norm", "split_half", "cos": {"a|b": {"cos", "ci"}}, "outside": {"name|label": {"cos", "ci"}}}}``),
    ``n_texts``, ``n_groups``, ``random_abs_cos``, ``ci``."""
    arrays = {str(k): np.asarray(v, dtype=np.float64) for k, v in diffs.items()}
    if len(arrays) < 1:
        raise InterpError("no diffs to compare", field="diffs")
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3:
        raise InterpError(f"every diff must be [n_layers, n_texts, d] on the same texts; got shapes "
                          f"{sorted(shapes)}", field="diffs")
    n_layers, n, d = next(iter(shapes))
    g = np.asarray([str(x) for x in groups])
    if len(g) != n:
        raise InterpError(f"{len(g)} group labels for {n} texts; give one per text", field="groups")
    for label, (a, b) in (contrasts or {}).items():
        missing = [x for x in (a, b) if x not in arrays]
        if missing:
            raise InterpError(f"contrast {label!r} names {missing[0]!r}, not one of {sorted(arrays)}",
                              field="contrasts")
        arrays[str(label)] = arrays[a] - arrays[b]
    layer_ids = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if len(layer_ids) != n_layers:
        raise InterpError(f"{len(layer_ids)} layer indices for {n_layers} layers of diffs", field="layers")
    names = list(arrays)
    draws, codes = cluster_bootstrap_weights(g, n, n_boot=n_boot, seed=seed)  # [B, k] cluster counts, [n] cluster
    k = draws.shape[1]
    counts = np.bincount(codes, minlength=k).astype(np.float64)
    half = np.zeros(n, bool)
    for c in range(k):
        half[np.flatnonzero(codes == c)[::2]] = True
    lo_q, hi_q = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def interval(x: np.ndarray) -> list[float] | None:
        x = x[np.isfinite(x)]
        return [float(np.percentile(x, lo_q)), float(np.percentile(x, hi_q))] if x.size else None

    out_layers: dict[str, Any] = {}
    for i, layer in enumerate(layer_ids):
        sums = {nm: np.stack([a[i][codes == c].sum(0) for c in range(k)]) for nm, a in arrays.items()}  # [k, d]
        mean = {nm: s.sum(0) / n for nm, s in sums.items()}
        boot = {nm: (draws @ s) / (draws @ counts)[:, None] for nm, s in sums.items()}  # [B, d]
        row: dict[str, Any] = {
            "norm": {nm: float(np.linalg.norm(m)) for nm, m in mean.items()},
            "split_half": {nm: (float(_cos(a[i][half].mean(0), a[i][~half].mean(0))) if (~half).any() else None)
                           for nm, a in arrays.items()},
            "cos": {}, "outside": {}}
        for j, x in enumerate(names):
            for y in names[j + 1:]:
                row["cos"][f"{x}|{y}"] = {"cos": float(_cos(mean[x], mean[y])), "ci": interval(_cos(boot[x], boot[y]))}
        for label, vecs in (outside or {}).items():
            v = vecs.get(layer) if isinstance(vecs, Mapping) else None
            if v is None:
                continue
            v = np.asarray(v.float().numpy() if hasattr(v, "float") and hasattr(v, "numpy") else v, dtype=np.float64)
            if v.shape != (d,):
                raise InterpError(f"outside vector {label!r} at layer {layer} has shape {v.shape}, expected ({d},)",
                                  field="outside")
            for nm in names:
                row["outside"][f"{nm}|{label}"] = {"cos": float(_cos(mean[nm], v)), "ci": interval(_cos(boot[nm], v))}
        out_layers[str(layer)] = row
    return {"names": names, "contrasts": {str(k_): list(v) for k_, v in (contrasts or {}).items()},
            "layers": out_layers, "n_texts": int(n), "n_groups": int(k), "d_model": int(d),
            "random_abs_cos": math.sqrt(2 / math.pi / d),
            "ci": {"method": CI_METHOD, "level": level, "n_boot": int(n_boot), "seed": int(seed)}}
