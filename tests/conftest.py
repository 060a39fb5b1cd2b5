"""Shared fixtures: tiny in-process models (fast), the real default model (pulled on
demand, cached across runs), and ../shared reference data (skipped where absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EM_INTERP_SHARED", REPO.parent / "shared"))


def pytest_configure(config):
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): tiny
    models' steps are too small for intra-op threads, which spin on each other on a busy CPU, and
    bf16 kernels then do not depend on the core count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"reference data not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def em_reference(shared_dir) -> Path:
    path = shared_dir / "em_reference"
    if not path.is_dir():
        pytest.skip("em_reference/ not in shared data")
    return path


@pytest.fixture(scope="session")
def tiny_lm():
    """Tiny random Llama (4 layers, d_model 64) with a trained BPE + ChatML template."""
    from em_interp.models import tiny_model

    return tiny_model("llama", seed=0)


@pytest.fixture(scope="session")
def tiny_qwen():
    from em_interp.models import tiny_model

    return tiny_model("qwen2", seed=1)


@pytest.fixture(scope="session")
def default_lm():
    """The real default model (smollm2-135m-instruct), pulled once into the user cache."""
    from em_interp.errors import ModelUnavailableError
    from em_interp.models import load_model

    try:
        return load_model("smollm2-135m-instruct", device="cpu")
    except ModelUnavailableError as exc:  # the offline kind only: no PyPI and nothing cached
        pytest.skip(f"default model unavailable offline: {exc}")
    # any other failure (a corrupt cache, a conversion or loading bug) fails the tests that use it


class KilledAtStep(Exception):
    """A training run stopped from outside at a chosen step (tests of exact resume)."""


@pytest.fixture
def kill_at():
    """``kill_at(n)``: an ``on_step`` callback for ``train`` that raises ``kill_at.error`` at step ``n``."""
    def make(step: int):
        def on_step(info: dict) -> None:
            if info["step"] == step:
                raise KilledAtStep(step)
        return on_step
    make.error = KilledAtStep
    return make
