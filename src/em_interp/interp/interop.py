"""Hand a ``Direction`` to steering-vectors and repeng, and take theirs back (the ``interop`` extra).

Both tools add ``coefficient * vector[L]`` to decoder layer L's output (our ``resid_post.L``).
Exports are unit-normalised by default, so their coefficient means what our ``alpha``
means (``ALPHA_CONVENTION``): ``steer(lm, d, alpha)`` and ``to_steering_vector(d).apply(model,
multiplier=alpha)`` or repeng's ``set_control(to_control_vector(d, ...), coeff=alpha)`` edit
the residual stream identically. Imports keep whatever norm the vectors have
(``normalization="none"``).

- ``to_steering_vector(direction)`` / ``from_steering_vector(sv)``: steering-vectors'
  ``SteeringVector(layer_activations={L: Tensor[d]}, layer_type="decoder_block")``;
- ``to_control_vector(direction, model_type)`` / ``from_control_vector(cv)``: repeng's
  ``ControlVector(model_type, directions={L: ndarray[d]})``.

repeng 0.4 annotates with ``numpy.float_``, removed in NumPy 2: ``import_repeng`` restores
that alias (``numpy.float64``) before importing it.
"""

from __future__ import annotations

from typing import Any, Sequence

from em_interp.errors import InterpError
from em_interp.interp.direction import Direction


def _missing(package: str) -> InterpError:
    return InterpError(f"{package} is not installed; pip install 'em-interp[interop]' (or {package})",
                       field="interop")


def _vectors(direction: Direction, layers: Sequence[int] | None, normalize: bool) -> dict[int, Any]:
    if direction.site_kind != "resid_post":
        raise InterpError(f"steering-vectors / repeng steer decoder-layer outputs (resid_post); this direction "
                          f"lives at {direction.site_kind}", field="site_kind")
    d = direction.normalized() if normalize else direction
    return {int(layer): d.vector(layer).detach().float().cpu() for layer in (layers or d.layers)}


def to_steering_vector(direction: Direction, *, layers: Sequence[int] | None = None, normalize: bool = True) -> Any:
    """A steering-vectors ``SteeringVector`` (decoder-block outputs); unit vectors unless ``normalize=False``."""
    try:
        from steering_vectors import SteeringVector
    except ImportError:
        raise _missing("steering-vectors") from None
    return SteeringVector(layer_activations=_vectors(direction, layers, normalize), layer_type="decoder_block")


def from_steering_vector(sv: Any, *, model: str = "", method: str = "steering_vectors") -> Direction:
    """A ``Direction`` at ``resid_post`` from a steering-vectors ``SteeringVector`` (decoder_block only)."""
    if getattr(sv, "layer_type", "decoder_block") != "decoder_block":
        raise InterpError(f"only decoder_block steering vectors map to resid_post, got layer_type {sv.layer_type!r}",
                          field="layer_type")
    return Direction({int(k): v.detach().float().cpu() for k, v in sv.layer_activations.items()}, model=model,
                     site_kind="resid_post", method=method, extra={"source": "steering-vectors"})


def import_repeng() -> Any:
    """Import repeng (restoring ``numpy.float_`` for repeng 0.4 under NumPy 2); clear error if absent."""
    import numpy as np

    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]  # repeng 0.4 annotations name it
    try:
        import repeng
    except ImportError:
        raise _missing("repeng") from None
    return repeng


def to_control_vector(direction: Direction, model_type: str, *, layers: Sequence[int] | None = None,
                      normalize: bool = True) -> Any:
    """A repeng ``ControlVector`` for ``model_type`` (e.g. ``model.config.model_type``); unit vectors by default."""
    repeng = import_repeng()
    return repeng.ControlVector(model_type=model_type,
                                directions={k: v.numpy() for k, v in _vectors(direction, layers, normalize).items()})


def from_control_vector(cv: Any, *, model: str = "", method: str = "repeng") -> Direction:
    """A ``Direction`` at ``resid_post`` from a repeng ``ControlVector``."""
    import torch

    return Direction({int(k): torch.as_tensor(v).float() for k, v in cv.directions.items()}, model=model,
                     site_kind="resid_post", method=method, extra={"source": "repeng", "model_type": cv.model_type})
