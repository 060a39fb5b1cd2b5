"""Steering (add alpha * unit direction) and directional ablation (zero or mean), on ``interp.hooks``.

Both are context managers that work on anything ``interp.as_model`` takes (``LoadedModel``,
``(model, tokenizer)``, nnsight ``LanguageModel``, TransformerLens models) and act at the
direction's own site kind (``direction.site_kind``: a ``mlp_out`` direction is added at
``mlp_out.L``). Hooks are removed in ``finally``: nested contexts remove only their own and
nothing leaks after an exception. Layers default to the direction's own layers; a
direction is applied at a layer it has no vector for only with ``broadcast=True`` (a
single-layer direction then serves every layer).

The meaning of alpha (``ALPHA_CONVENTION``, one definition used by the CLI and the
pipeline): ``steer`` adds ``alpha * v / ||v||`` -- the residual stream moves by exactly
``alpha`` in L2 (residual units), whatever the direction's norm. The layer's mean residual
norm is recorded beside it by ``steering_sweep`` (``resid_norm``), so ``alpha / resid_norm``
reads as the relative strength.

``tokens`` selects edited tokens (``"all"``, ``"prompt"``, ``"response"``). Under KV-cached
``generate()`` the first uncached call is the prompt and later calls are generated tokens
(the first new token comes from the prompt pass, so it is unsteered under
``"response"``); in a plain forward pass every token is a prompt token.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from em_interp.errors import InterpError
from em_interp.interp.direction import Direction
from em_interp.interp.handles import ModelHandle, as_model
from em_interp.interp.hooks import EDIT_TOKENS, hooks
from em_interp.interp.inputs import resolve_tokens
from em_interp.interp.sites import check_layers
from em_interp.progress import Progress

ALPHA_CONVENTION = "unit"
ALPHA_DEFINITION = ("alpha multiplies the unit-norm direction: steering moves the residual stream by exactly alpha "
                    "(L2, residual units); resid_norm = the layer's mean per-token residual norm, alpha / resid_norm "
                    "= relative strength")
ABLATION_MODES = ("zero", "mean")
POSITIONS = EDIT_TOKENS  # old name


def _fit(lm: Any, direction: Direction, layers: Any, broadcast: bool) -> tuple[ModelHandle, list[int]]:
    """The model handle and validated layer list; every layer must have a vector (or ``broadcast``)."""
    if not isinstance(direction, Direction):
        raise InterpError(f"expected a Direction, got {type(direction).__name__}", field="direction")
    handle = as_model(lm)
    if direction.d_model != handle.d_model:
        raise InterpError(f"direction has d_model {direction.d_model} but the model has d_model "
                          f"{handle.d_model}", field="d_model")
    layer_list = check_layers(direction.layers if layers is None else layers, handle.n_layers)
    for layer in layer_list:
        direction.vector(layer, broadcast=broadcast)  # raises for a layer the direction lacks
    return handle, layer_list


def _unit(v):
    v = v.float()
    return v / v.norm().clamp_min(1e-12)


class _PerDevice:
    """A tensor cached per (key, dtype, device)."""

    def __init__(self, make: Callable[[Any], Any]) -> None:
        self.make, self.cache = make, {}

    def get(self, key: Any, h) -> Any:
        k = (key, h.dtype, h.device)
        if k not in self.cache:
            self.cache[k] = self.make(key).to(device=h.device, dtype=h.dtype)
        return self.cache[k]


def _check_alpha(alpha: Any) -> None:
    """A steering coefficient must be a finite number (NaN would silently blank every answer)."""
    from em_interp.config import check_number

    try:
        check_number("alpha", float(alpha))
    except (TypeError, ValueError):
        raise InterpError(f"alpha must be a finite number, got {alpha!r}", field="alpha") from None


@contextlib.contextmanager
def steer(lm: Any, direction: Direction, alpha: float, layers: int | Sequence[int] | str | None = None,
          tokens: str | None = None, *, broadcast: bool = False, positions: str | None = None) -> Iterator[dict]:
    """Add ``alpha * unit(direction[L])`` at ``{direction.site_kind}.L`` for each layer in ``layers``.

    Yields the record of what it does (``alpha``, ``alpha_convention``, ``site_kind``,
    ``layers``, ``tokens``). ``alpha=0`` leaves outputs bit-identical. ``positions=`` is the
    deprecated spelling of ``tokens``."""
    _check_alpha(alpha)
    tokens = resolve_tokens(tokens, positions=positions, allowed=EDIT_TOKENS, default="all")
    handle, layer_list = _fit(lm, direction, layers, broadcast)
    adds = _PerDevice(lambda layer: float(alpha) * _unit(direction.vector(layer, broadcast=broadcast)))
    info = {"alpha": float(alpha), "alpha_convention": ALPHA_CONVENTION, "site_kind": direction.site_kind,
            "layers": layer_list, "tokens": tokens}
    state_box: dict = {}

    def make(layer: int):
        def edit(h, site):
            if alpha == 0:
                return None
            add = adds.get(layer, h)
            mask = state_box["state"].token_mask(h.shape[1], tokens, h.device)
            return h + add if mask is None else h + add * mask[None, :, None].to(h.dtype)
        return edit

    with hooks(handle, {f"{direction.site_kind}.{layer}": make(layer) for layer in layer_list},
               track_positions=tokens != "all") as state:
        state_box["state"] = state
        yield info


def mean_projections(lm: Any, direction: Direction, examples: Sequence[Any], layers: Sequence[int] | None = None, *,
                     broadcast: bool = False, batch_size: int = 8, max_length: int | None = None,
                     progress: bool | None = None) -> dict[int, float]:
    """Mean projection onto ``unit(direction[L])`` of the reference ``examples``' activations at
    ``{site_kind}.L`` over all their tokens (mean over examples of each example's token mean):
    what ``ablate(mode="mean")`` sets the projection to. ``progress``: a capture bar (``None``:
    when stderr is a terminal)."""
    from em_interp.interp.capture import capture

    handle, layer_list = _fit(lm, direction, layers, broadcast)
    cap = capture(handle, list(examples), [f"{direction.site_kind}.{layer}" for layer in layer_list], tokens="all",
                  batch_size=batch_size, max_length=max_length, progress=progress, desc="capture reference")
    return {layer: float(cap[f"{direction.site_kind}.{layer}"] @ _unit(direction.vector(layer, broadcast=broadcast)))
            for layer in layer_list}


@contextlib.contextmanager
def ablate(lm: Any, direction: Direction, layers: int | Sequence[int] | str | None = None, *,
           mode: str = "zero", reference: Sequence[Any] | Mapping[int, float] | None = None,
           tokens: str | None = None, broadcast: bool = False, positions: str | None = None,
           progress: bool | None = None) -> Iterator[dict]:
    """Directional ablation at ``{direction.site_kind}.L`` for each layer (default: the direction's).

    ``mode="zero"``: project ``unit(direction[L])`` out (``h - (h.u) u``). ``mode="mean"``:
    set the projection to the reference set's mean projection (``h - (h.u - m_L) u``);
    ``reference`` is a list of examples (``mean_projections`` is run on them) or
    ``{layer: m_L}``. ``layers="all"`` on a ``resid_post`` direction in zero mode also cleans the
    embeddings entering layer 0 (with layer 0's vector). Yields the record (``mode``,
    ``layers``, ``site_kind``, ``tokens``, ``mean_projection``) to store beside results.
    ``progress``: a bar for the reference capture of mean mode (``None``: when stderr is a
    terminal); the edit itself costs nothing to set up."""
    tokens = resolve_tokens(tokens, positions=positions, allowed=EDIT_TOKENS, default="all")
    if mode not in ABLATION_MODES:
        raise InterpError(f"unknown ablation mode '{mode}'; valid: {', '.join(ABLATION_MODES)}", field="mode")
    handle, layer_list = _fit(lm, direction, layers, broadcast)
    if mode == "mean":
        if reference is None:
            raise InterpError("mode='mean' needs reference examples (or {layer: mean projection})", field="reference")
        means = (dict(reference) if isinstance(reference, Mapping)
                 else mean_projections(handle, direction, reference, layer_list, broadcast=broadcast,
                                       progress=progress))
        missing = [layer for layer in layer_list if layer not in means]
        if missing:
            raise InterpError(f"reference has no mean projection for layers {missing}", field="reference")
    elif reference is not None:
        raise InterpError("reference is only used with mode='mean'", field="reference")
    else:
        means = {}
    units = _PerDevice(lambda layer: _unit(direction.vector(layer, broadcast=broadcast)))
    state_box: dict = {}

    def make(layer: int):
        m = float(means.get(layer, 0.0))

        def edit(h, site):
            u = units.get(layer, h)
            proj = (h @ u)[..., None]
            if m:
                proj = proj - m
            mask = state_box["state"].token_mask(h.shape[1], tokens, h.device)
            if mask is not None:
                proj = proj * mask[None, :, None].to(h.dtype)
            return h - proj * u
        return edit

    fns: dict[str, Any] = {f"{direction.site_kind}.{layer}": make(layer) for layer in layer_list}
    if layers == "all" and direction.site_kind == "resid_post" and mode == "zero":
        fns["resid_pre.0"] = make(0)  # also clean the embeddings entering layer 0
    info = {"mode": mode, "layers": layer_list, "site_kind": direction.site_kind, "tokens": tokens,
            "embeddings": "resid_pre.0" in fns, "mean_projection": {int(k): float(v) for k, v in means.items()}}
    with hooks(handle, fns, track_positions=tokens != "all") as state:
        state_box["state"] = state
        yield info


def random_direction_like(direction: Direction, seed: int = 0) -> Direction:
    """A random Gaussian direction with the same per-layer norms (the ablation/steering control)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    vecs = {}
    for layer, v in direction.vectors.items():
        r = torch.randn(v.shape[0], generator=g)
        vecs[layer] = r / r.norm() * v.float().norm()
    return direction.replace(vectors=vecs, method="random", extra={"seed": seed, "like": direction.method})


@contextlib.contextmanager
def _norm_meter(handle: ModelHandle, site: str) -> Iterator[dict]:
    """Mean per-token L2 norm of the activation at ``site`` over everything run in the context."""
    acc = {"sum": 0.0, "n": 0}

    def read(h, _site):
        norms = h.detach().float().norm(dim=-1)
        acc["sum"] += float(norms.sum())
        acc["n"] += int(norms.numel())

    with hooks(handle, {site: read}):
        yield acc


def _read_done(path: Path | None) -> dict[tuple[str, int, float], dict]:
    done: dict[tuple[str, int, float], dict] = {}
    if path is None or not path.exists():
        return done
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            done[(str(row.get("direction", "direction")), int(row["layer"]), float(row["alpha"]))] = row
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            raise InterpError("corrupt sweep row", file=path, line=i) from None
    return done


def steering_sweep(lm: Any, direction: Direction, alphas: Sequence[float], layers: Sequence[int],
                   eval_fn: Callable[[Any], dict], *, tokens: str | None = None, random_control: bool = True,
                   random_seed: int = 0, broadcast: bool = False, out_path: str | Path | None = None,
                   positions: str | None = None, progress: bool | None = None) -> list[dict]:
    """For each layer (steered alone) and alpha, run ``eval_fn(lm)`` under ``steer`` and
    collect rows ``{direction, layer, alpha, alpha_convention, tokens, resid_norm,
    alpha_over_norm, **eval_fn(lm)}`` (``eval_fn`` returns e.g. ``em_interp.eval.summarize``).

    ``random_control=True`` (default) adds, at each (layer, alpha), a row with
    ``direction="random"``: the same run with ``random_direction_like(direction,
    random_seed)`` (same norms; under the unit alpha convention the same step size), so
    an effect can be told from "any push of this size". Its alpha=0 row is the direction's
    (alpha=0 is an exact no-op). ``resid_norm``: the mean per-token residual norm at the
    steered site on the evaluated text, read before the edit. With ``out_path``, rows are
    appended to a JSONL file as they finish and rows already there are skipped.
    ``progress``: a bar over the (layer, alpha, arm) runs with runs/s (``None``: when stderr is
    a terminal; rows found in ``out_path`` count as done)."""
    for alpha in alphas:
        _check_alpha(alpha)
    tokens = resolve_tokens(tokens, positions=positions, allowed=EDIT_TOKENS, default="all")
    handle = as_model(lm)
    check_layers(list(layers), handle.n_layers)
    path = Path(out_path) if out_path is not None else None
    done = _read_done(path)
    arms: list[tuple[str, Direction]] = [("direction", direction)]
    if random_control:
        arms.append(("random", random_direction_like(direction, seed=random_seed)))
    rows: list[dict] = []
    keys = [(label, int(layer), float(alpha)) for layer in layers for alpha in alphas for label, _ in arms]
    with Progress(len(keys), "steering sweep", "run", progress=progress,
                  initial=sum(k in done for k in keys)) as bar:
        _sweep(handle, lm, layers, alphas, arms, done, rows, eval_fn, tokens, broadcast, random_seed, path, bar)
    return rows


def _sweep(handle: ModelHandle, lm: Any, layers: Sequence[int], alphas: Sequence[float],
           arms: list[tuple[str, Direction]], done: dict, rows: list[dict], eval_fn: Callable[[Any], dict],
           tokens: str, broadcast: bool, random_seed: int, path: Path | None, bar: Any) -> None:
    """The loop of ``steering_sweep``: one row per (layer, alpha, arm), appended to ``rows``."""
    for layer in layers:
        for alpha in alphas:
            for label, vec in arms:
                key = (label, int(layer), float(alpha))
                if key in done:
                    rows.append(done[key])
                    continue
                if label == "random" and float(alpha) == 0.0 and ("direction", int(layer), 0.0) in done:
                    row = {**done[("direction", int(layer), 0.0)], "direction": "random", "random_seed": random_seed}
                else:
                    with _norm_meter(handle, f"{vec.site_kind}.{int(layer) % handle.n_layers}") as meter:
                        with steer(handle, vec, float(alpha), layers=[layer], tokens=tokens, broadcast=broadcast):
                            result = eval_fn(lm)
                    if not isinstance(result, dict):
                        raise InterpError(f"eval_fn must return a dict, got {type(result).__name__}", field="eval_fn")
                    norm = meter["sum"] / meter["n"] if meter["n"] else None
                    row = {"direction": label, "layer": int(layer), "alpha": float(alpha),
                           "alpha_convention": ALPHA_CONVENTION, "tokens": tokens, "site_kind": vec.site_kind,
                           "resid_norm": norm, "alpha_over_norm": float(alpha) / norm if norm else None,
                           **({"random_seed": random_seed} if label == "random" else {}), **result}
                done[key] = row
                rows.append(row)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with path.open("a") as fh:
                        fh.write(json.dumps(row, default=float) + "\n")
                bar.update(1)
