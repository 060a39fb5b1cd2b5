"""``Direction``: an immutable per-layer vector set with the metadata saying where it came from.

Arithmetic (``+``, ``-``, scalar ``*`` and ``/``, unary ``-``) returns new directions;
``normalized()`` gives unit vectors per layer; ``to()`` moves/casts. ``save(path)`` writes
``<path>.safetensors`` (one tensor per layer, key ``layer.L``) and ``<path>.json``
(metadata); ``Direction.load(path, lm=None)`` reads them back and, given a model,
checks d_model and the layer range. ``cosine_table`` compares directions across layers,
methods, seeds and models. ``to_numpy()`` / ``to_torch()`` hand the vectors to other
tools (``interp.interop`` converts to steering-vectors / repeng objects).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from em_interp.errors import InterpError

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Direction:
    """Per-layer vectors (``{layer: Tensor[d_model]}``) plus provenance.

    ``model``: base model name/path; ``adapter_hash``: of the finetune, if any;
    ``site_kind``: the site the vectors live at (``resid_post``, ``mlp_out``...; ``steer`` and
    ``ablate`` act there); ``tokens``: the token rule used in capture;
    ``method``: ``mean_diff`` / ``model_diff`` / ``persona`` / ``probe`` / ``pca`` /
    ``random`` / an arithmetic expression; ``n_pos`` / ``n_neg``: examples per side;
    ``data_hash``: of the examples; ``normalization``: ``none`` or ``unit``.
    """

    vectors: Mapping[int, Any]
    model: str = ""
    adapter_hash: str | None = None
    site_kind: str = "resid_post"
    tokens: str = "response"
    method: str = "mean_diff"
    n_pos: int = 0
    n_neg: int = 0
    data_hash: str = ""
    normalization: str = "none"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        import torch

        from em_interp.interp.inputs import LEGACY_REDUCE
        from em_interp.interp.sites import SITE_KINDS

        if self.site_kind not in SITE_KINDS:
            raise InterpError(f"unknown site_kind '{self.site_kind}'; valid: {', '.join(SITE_KINDS)}", field="site_kind")
        object.__setattr__(self, "tokens", LEGACY_REDUCE.get(self.tokens, self.tokens))

        if not self.vectors:
            raise InterpError("a direction needs at least one layer vector", field="vectors")
        vecs = {}
        d = None
        for layer, v in self.vectors.items():
            t = torch.as_tensor(v).detach().clone()
            if t.ndim != 1:
                raise InterpError(f"layer {layer}: a direction vector must be 1-D, got shape {tuple(t.shape)}")
            if d is not None and t.shape[0] != d:
                raise InterpError(f"layer {layer}: d_model {t.shape[0]} differs from {d}")
            d = t.shape[0]
            vecs[int(layer)] = t
        object.__setattr__(self, "vectors", MappingProxyType(dict(sorted(vecs.items()))))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    # --- access -----------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return list(self.vectors)

    @property
    def d_model(self) -> int:
        return int(next(iter(self.vectors.values())).shape[0])

    @property
    def reduce(self) -> str:
        """Deprecated name of ``tokens``."""
        return self.tokens

    def __getitem__(self, layer: int):
        return self.vector(layer)

    def vector(self, layer: int, *, broadcast: bool = False):
        """The vector for ``layer``. A layer the direction does not have raises, unless
        ``broadcast=True`` and the direction has exactly one layer (then that vector serves)."""
        if layer in self.vectors:
            return self.vectors[layer]
        if broadcast and len(self.vectors) == 1:
            return next(iter(self.vectors.values()))
        hint = " (pass broadcast=True to apply its single vector at other layers)" if len(self.vectors) == 1 else ""
        raise InterpError(f"direction has no vector for layer {layer}; it has layers {self.layers}{hint}",
                          field="layers")

    def to_torch(self, layers: Sequence[int] | None = None):
        """``[n_layers, d]`` float32 tensor of the vectors at ``layers`` (default: the direction's, in order)."""
        import torch

        return torch.stack([self.vectors[layer].detach().float().cpu() for layer in (layers or self.layers)])

    def to_numpy(self, layers: Sequence[int] | None = None):
        """``[n_layers, d]`` float32 numpy array (rows in ``layers`` order, default the direction's layers)."""
        return self.to_torch(layers).numpy()

    def norms(self) -> dict[int, float]:
        return {layer: float(v.norm()) for layer, v in self.vectors.items()}

    def meta(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "vectors"}
        d["extra"] = dict(self.extra)
        d.update(layers=self.layers, d_model=self.d_model, format_version=FORMAT_VERSION)
        return d

    def replace(self, **changes: Any) -> "Direction":
        return dataclasses.replace(self, **changes)

    def select(self, layers: Sequence[int], *, broadcast: bool = False) -> "Direction":
        """The direction restricted to (or, with ``broadcast``, spread over) ``layers``."""
        return self.replace(vectors={layer: self.vector(layer, broadcast=broadcast) for layer in layers})

    # --- arithmetic -------------------------------------------------------------------
    def _combine(self, other: "Direction", op: str) -> "Direction":
        if not isinstance(other, Direction):
            return NotImplemented
        if other.d_model != self.d_model:
            raise InterpError(f"cannot combine directions of d_model {self.d_model} and {other.d_model}")
        if set(other.layers) != set(self.layers):
            raise InterpError(f"cannot combine directions with layers {self.layers} and {other.layers}")
        vecs = {layer: (v + other.vectors[layer] if op == "+" else v - other.vectors[layer])
                for layer, v in self.vectors.items()}
        return self.replace(vectors=vecs, method=f"({self.method} {op} {other.method})", normalization="none")

    def __add__(self, other: "Direction") -> "Direction":
        return self._combine(other, "+")

    def __sub__(self, other: "Direction") -> "Direction":
        return self._combine(other, "-")

    def __mul__(self, scalar: float) -> "Direction":
        if not isinstance(scalar, (int, float)):
            return NotImplemented
        return self.replace(vectors={k: v * scalar for k, v in self.vectors.items()},
                            method=f"{scalar:g} * {self.method}", normalization="none")

    __rmul__ = __mul__

    def __truediv__(self, scalar: float) -> "Direction":
        return self * (1.0 / scalar)

    def __neg__(self) -> "Direction":
        return self.replace(vectors={k: -v for k, v in self.vectors.items()}, method=f"-{self.method}")

    def normalized(self) -> "Direction":
        """Unit-norm vector per layer (zero vectors stay zero)."""
        return self.replace(vectors={k: v / v.norm().clamp_min(1e-12) for k, v in self.vectors.items()},
                            normalization="unit")

    def to(self, device: Any = None, dtype: Any = None) -> "Direction":
        return self.replace(vectors={k: v.to(device=device, dtype=dtype) for k, v in self.vectors.items()})

    def cosine(self, other: "Direction", layer: int | None = None) -> float | dict[int, float]:
        """Cosine with ``other`` at ``layer``, or per shared layer as a dict."""
        import torch.nn.functional as F

        if layer is not None:
            return float(F.cosine_similarity(self.vector(layer).float(), other.vector(layer).float(), dim=0))
        shared = [layer for layer in self.layers if layer in other.vectors]
        return {layer: float(F.cosine_similarity(self.vectors[layer].float(), other.vectors[layer].float(), dim=0))
                for layer in shared}

    # --- model checks and I/O -----------------------------------------------------------
    def check(self, model: Any) -> None:
        """Raise ``InterpError`` if this direction does not fit ``model`` (anything ``as_model`` takes)."""
        from em_interp.interp.handles import as_model

        handle = as_model(model)
        d, n = handle.d_model, handle.n_layers
        if d != self.d_model:
            raise InterpError(f"direction has d_model {self.d_model} but the model has d_model {d}", field="d_model")
        bad = [layer for layer in self.layers if not 0 <= layer < n]
        if bad:
            raise InterpError(f"direction layer {bad[0]} out of range; the model has layers 0..{n - 1}",
                              field="layers")

    def save(self, path: str | Path) -> Path:
        """Write ``<path>.safetensors`` + ``<path>.json``; returns the safetensors path."""
        from safetensors.torch import save_file

        st, meta_path = _paths(path)
        st.parent.mkdir(parents=True, exist_ok=True)
        meta = self.meta()
        save_file({f"layer.{k}": v.detach().float().contiguous().cpu() for k, v in self.vectors.items()}, str(st),
                  metadata={"method": self.method, "model": self.model, "site_kind": self.site_kind,
                            "tokens": self.tokens})
        meta_path.write_text(json.dumps(meta, indent=2, default=str))
        return st

    @classmethod
    def load(cls, path: str | Path, lm: Any = None) -> "Direction":
        """Read a saved direction; with ``lm`` check it fits that model."""
        from em_interp.tensorfiles import load_safetensors

        st, meta_path = _paths(path)
        if not st.exists():
            raise InterpError("direction file not found", file=st)
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise InterpError("corrupt direction metadata (not UTF-8 JSON)", file=meta_path) from None
        if not isinstance(meta, dict):
            raise InterpError("corrupt direction metadata (not a JSON object)", file=meta_path)
        tensors = load_safetensors(st, InterpError)  # a corrupt file is one line naming it
        try:
            vectors = {int(k.split(".", 1)[1]): v for k, v in tensors.items()}
        except (IndexError, ValueError):
            raise InterpError(f"not a direction file (keys {sorted(tensors)[:3]})", file=st) from None
        bad = [layer for layer, v in vectors.items() if not bool(v.isfinite().all())]
        if bad:
            raise InterpError(f"direction for layer {bad[0]} has NaN or infinite values", file=st)
        known = {f.name for f in dataclasses.fields(cls)} - {"vectors"}
        if "reduce" in meta and "tokens" not in meta:  # files written before the tokens rename
            meta["tokens"] = meta["reduce"]
        direction = cls(vectors=vectors, **{k: v for k, v in meta.items() if k in known})
        if lm is not None:
            try:
                direction.check(lm)
            except InterpError as exc:
                raise InterpError(exc.message, file=st, field=exc.field) from None
        return direction

    def __repr__(self) -> str:
        return (f"Direction(method={self.method!r}, model={self.model!r}, site={self.site_kind}, "
                f"layers={self.layers}, d_model={self.d_model}, n_pos={self.n_pos}, n_neg={self.n_neg})")


def _paths(path: str | Path) -> tuple[Path, Path]:
    path = Path(path)
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def cosine_table(directions: Mapping[str, Direction] | Sequence[Direction], *,
                 layers: Sequence[int] | None = None) -> tuple[list[str], Any]:
    """Pairwise cosines of (direction, layer) pairs.

    ``directions``: ``{label: Direction}`` (or a list, labelled by method). Each row is
    ``"label@L"`` for every layer of that direction (restricted to ``layers`` if given);
    returns ``(labels, numpy matrix)``.
    """
    import numpy as np
    import torch

    if not isinstance(directions, Mapping):
        directions = {f"{d.method}#{i}": d for i, d in enumerate(directions)}
    labels, vecs = [], []
    for label, d in directions.items():
        for layer in d.layers:
            if layers is not None and layer not in layers:
                continue
            labels.append(f"{label}@{layer}")
            vecs.append(d.vectors[layer].float())
    if not vecs:
        raise InterpError("no (direction, layer) pairs to compare", field="layers")
    dims = {v.shape[0] for v in vecs}
    if len(dims) > 1:
        raise InterpError(f"directions have different d_model: {sorted(dims)}")
    m = torch.stack(vecs)
    m = m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return labels, np.asarray((m @ m.T).numpy(), dtype=np.float64)
