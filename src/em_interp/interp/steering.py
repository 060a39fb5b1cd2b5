"""Steering (add alpha * v to the residual stream) and directional ablation (project v out).

Both are context managers on the plain HF / peft module (``lm`` may be a ``LoadedModel``
or the module itself): forward hooks on the chosen decoder layers' outputs
(``resid_post.L``), registered on entry and removed in ``finally`` on exit, so nested
contexts remove only their own hooks and nothing leaks after an exception.

Positions under KV-cached ``generate()``: a forward-pre-hook on the model reads how many
tokens the cache already holds, so each layer hook knows the absolute position of every
token it sees. The first uncached call defines the prompt; ``"response"`` means tokens
after the prompt (the generated ones), ``"prompt"`` the prompt tokens. In a plain
forward pass without a cache every token is a prompt token.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from em_interp.errors import InterpError
from em_interp.interp.direction import Direction
from em_interp.interp.sites import (body_of, check_layers, d_model_of, decoder_layers, first_tensor, n_layers_of,
                                    replace_first)

POSITIONS = ("all", "prompt", "response")


def _module(lm: Any):
    return lm.model if hasattr(lm, "tokenizer") and hasattr(lm, "model") else lm


def _past_length(args: tuple, kwargs: dict) -> int:
    cache = kwargs.get("past_key_values")
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    try:  # legacy tuple caches
        return int(cache[0][0].shape[-2])
    except (TypeError, IndexError, AttributeError):
        return 0


@contextlib.contextmanager
def _position_tracker(model: Any) -> Iterator[dict]:
    """Yields a dict whose ``offset`` is the cache length before the current forward and
    ``prompt_len`` the length of the last uncached (prompt) call."""
    state = {"offset": 0, "prompt_len": None}

    def pre(module, args, kwargs):
        past = _past_length(args, kwargs)
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        T = ids.shape[1] if ids is not None else 0
        state["offset"] = past
        if past == 0:
            state["prompt_len"] = T

    handle = body_of(model).register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield state
    finally:
        handle.remove()


def _position_mask(state: dict, T: int, positions: str, device):
    """``[T]`` bool mask of which of the current call's tokens to edit (None = all)."""
    import torch

    if positions == "all":
        return None
    pos = torch.arange(state["offset"], state["offset"] + T, device=device)
    prompt_len = state["prompt_len"] if state["prompt_len"] is not None else T
    is_prompt = pos < prompt_len
    return is_prompt if positions == "prompt" else ~is_prompt


def _fit(lm: Any, direction: Direction, layers: Any) -> tuple[Any, list[int]]:
    if not isinstance(direction, Direction):
        raise InterpError(f"expected a Direction, got {type(direction).__name__}", field="direction")
    model = _module(lm)
    if direction.d_model != d_model_of(model):
        raise InterpError(f"direction has d_model {direction.d_model} but the model has d_model "
                          f"{d_model_of(model)}", field="d_model")
    layer_list = check_layers(direction.layers if layers is None else layers, n_layers_of(model))
    for layer in layer_list:
        direction.vector(layer)  # raises if the direction has no vector for that layer
    return model, layer_list


@contextlib.contextmanager
def _layer_hooks(model: Any, layers: list[int], edit: Callable[[int, Any, dict], Any],
                 positions: str = "all") -> Iterator[None]:
    """Forward hooks replacing each layer's output with ``edit(layer, h, state)``. The
    position tracker (a pre-hook reading the KV-cache length every step) is installed only
    when ``positions`` needs it: with ``"all"`` it would be pure per-step overhead."""
    handles = []
    tracker = (_position_tracker(model) if positions != "all"
               else contextlib.nullcontext({"offset": 0, "prompt_len": None}))
    with tracker as state:
        try:
            blocks = decoder_layers(model)
            for layer in layers:
                def hook(module, args, output, layer=layer):
                    return replace_first(output, edit(layer, first_tensor(output), state))
                handles.append(blocks[layer].register_forward_hook(hook))
            yield state
        finally:
            for h in handles:
                h.remove()


@contextlib.contextmanager
def steer(lm: Any, direction: Direction, alpha: float, layers: int | Sequence[int] | str | None = None,
          positions: str = "all") -> Iterator[None]:
    """Add ``alpha * direction[L]`` to the residual stream after each layer ``L`` in ``layers``
    (default: the direction's layers; a single-layer direction can be applied at any layer).

    ``positions``: ``"all"``, ``"prompt"`` or ``"response"`` (generated tokens under
    KV-cached generation). ``alpha=0`` leaves outputs bit-identical.
    """
    if positions not in POSITIONS:
        raise InterpError(f"unknown positions '{positions}'; valid: {', '.join(POSITIONS)}", field="positions")
    model, layer_list = _fit(lm, direction, layers)
    cache: dict = {}

    def edit(layer: int, h, state):
        key = (layer, h.dtype, h.device)
        if key not in cache:
            cache[key] = (alpha * direction.vector(layer).float()).to(device=h.device, dtype=h.dtype)
        add = cache[key]
        mask = _position_mask(state, h.shape[1], positions, h.device)
        if mask is None:
            return h + add
        return h + add * mask[None, :, None].to(h.dtype)

    with _layer_hooks(model, layer_list, edit, positions):
        yield


@contextlib.contextmanager
def ablate(lm: Any, direction: Direction, layers: int | Sequence[int] | str = "all",
           positions: str = "all") -> Iterator[None]:
    """Directional ablation: project ``direction[L]`` (unit-normalised) out of the residual
    stream after each layer in ``layers`` (``"all"``: every layer, plus the embeddings
    entering layer 0). A single-layer direction is used at every layer; the direction may
    come from another model with the same d_model (cross-model transfer)."""
    if positions not in POSITIONS:
        raise InterpError(f"unknown positions '{positions}'; valid: {', '.join(POSITIONS)}", field="positions")
    model, layer_list = _fit(lm, direction, layers)
    units: dict = {}

    def unit(layer: int, h):
        key = (layer, h.dtype, h.device)
        if key not in units:
            v = direction.vector(layer).float()
            units[key] = (v / v.norm().clamp_min(1e-12)).to(h.device, h.dtype)
        return units[key]

    def project_out(layer: int, h, state):
        u = unit(layer, h)
        proj = (h @ u)[..., None] * u
        mask = _position_mask(state, h.shape[1], positions, h.device)
        if mask is not None:
            proj = proj * mask[None, :, None].to(h.dtype)
        return h - proj

    handles = []
    with _layer_hooks(model, layer_list, project_out, positions) as state:
        try:
            if layers == "all":  # also clean the embeddings entering layer 0
                def pre(module, args, kwargs):
                    if args:
                        return (project_out(0, args[0], state),) + tuple(args[1:]), kwargs
                    kwargs["hidden_states"] = project_out(0, kwargs["hidden_states"], state)
                    return args, kwargs

                handles.append(decoder_layers(model)[0].register_forward_pre_hook(pre, with_kwargs=True))
            yield
        finally:
            for h in handles:
                h.remove()


def random_direction_like(direction: Direction, seed: int = 0) -> Direction:
    """A random Gaussian direction with the same per-layer norms (the ablation/steering control)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    vecs = {}
    for layer, v in direction.vectors.items():
        r = torch.randn(v.shape[0], generator=g)
        vecs[layer] = r / r.norm() * v.float().norm()
    return direction.replace(vectors=vecs, method="random", extra={"seed": seed, "like": direction.method})


def steering_sweep(lm: Any, direction: Direction, alphas: Sequence[float], layers: Sequence[int],
                   eval_fn: Callable[[Any], dict], *, positions: str = "all",
                   out_path: str | Path | None = None) -> list[dict]:
    """For each layer (steered alone) and alpha, run ``eval_fn(lm)`` under ``steer`` and
    collect rows ``{layer, alpha, positions, **eval_fn(lm)}`` (``eval_fn`` returns e.g.
    ``em_interp.eval.summarize(...)`` with ``misaligned_share``).

    With ``out_path``, rows are appended to a JSONL file as they finish and rows already
    there are skipped: an interrupted sweep resumes without repeating work.
    """
    n = n_layers_of(_module(lm))
    check_layers(list(layers), n)
    done: dict[tuple[int, float], dict] = {}
    path = Path(out_path) if out_path is not None else None
    if path is not None and path.exists():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                done[(int(row["layer"]), float(row["alpha"]))] = row
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                raise InterpError("corrupt sweep row", file=path, line=i) from None
    rows = []
    for layer in layers:
        for alpha in alphas:
            key = (int(layer), float(alpha))
            if key in done:
                rows.append(done[key])
                continue
            with steer(lm, direction, float(alpha), layers=[layer], positions=positions):
                result = eval_fn(lm)
            if not isinstance(result, dict):
                raise InterpError(f"eval_fn must return a dict, got {type(result).__name__}", field="eval_fn")
            row = {"layer": int(layer), "alpha": float(alpha), "positions": positions, **result}
            rows.append(row)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as fh:
                    fh.write(json.dumps(row, default=float) + "\n")
    return rows
