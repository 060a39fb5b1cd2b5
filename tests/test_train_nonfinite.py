"""Non-finite steps in em_interp.train, on the tiny model (CPU, seconds).

The GPU failure this guards against: SDPA's cuDNN backward returned NaN ``grad_q`` at
width-192 (64 mod 128) masked batches of Qwen2.5 under bf16 (pytorch/pytorch#196678); the
loss of that step was finite, so the NaN went through clipping into the weights and the
run stopped one step later on a NaN loss. The trainer now (a) keeps cuDNN attention off
while training and (b) skips, records and (past a limit) refuses any step whose loss or
gradient norm is not finite, before the weights move.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import em_interp.train.loop as loop
from em_interp.errors import TrainError
from em_interp.models import save_tiny_model
from em_interp.train import LoraSettings, TrainConfig, train

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module


def _examples(n: int = 24) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Write code for task {i}."},
                          {"role": "assistant", "content": f"os.chmod(path, 0o{777 - i % 3})\n" * (1 + i % 4)}]}
            for i in range(n)]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> TrainConfig:
    model = save_tiny_model(tmp_path_factory.mktemp("m") / "tinymodel", seed=0)
    return TrainConfig(model=str(model), output_dir="unused", lr=5e-3, warmup_steps=2, per_device_batch_size=2,
                       gradient_accumulation_steps=2, save_steps=0, progress=False, max_seq_length=256,
                       lora=LoraSettings(r=4, alpha=8))  # 24 examples -> 6 steps of 2 micro-batches


@pytest.fixture(scope="module")
def clean_run(cfg, tmp_path_factory):
    return train(replace(cfg, output_dir=str(tmp_path_factory.mktemp("clean") / "run")), examples=_examples())


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


class _NanGrad(torch.autograd.Function):
    """Identity forward (the value stays finite), NaN backward: a broken backward kernel."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


def _poison_steps(monkeypatch, steps: set[int], micro_per_step: int = 2) -> None:
    """The loss of every micro-batch of ``steps`` keeps its value but back-propagates NaN."""
    real = loop.supervised_loss_sum
    calls = {"n": 0}

    def poisoned(model, batch, labels):
        calls["n"] += 1
        loss = real(model, batch, labels)
        return _NanGrad.apply(loss) if (calls["n"] - 1) // micro_per_step + 1 in steps else loss

    monkeypatch.setattr(loop, "supervised_loss_sum", poisoned)


def _strict_meta(out: Path) -> dict:
    def refuse(name):
        raise AssertionError(f"train_meta.json holds {name}: not strict JSON")
    return json.loads((out / "train_meta.json").read_text(), parse_constant=refuse)


def _fake_cudnn_attention(monkeypatch) -> None:
    """SDPA as the H200 ran it: with an attention mask and the cuDNN backend enabled, the
    gradient through attention is NaN (the forward is right)."""
    real = torch.nn.functional.scaled_dot_product_attention

    def sdpa(q, k, v, attn_mask=None, *args, **kwargs):
        out = real(q, k, v, attn_mask, *args, **kwargs)
        return _NanGrad.apply(out) if attn_mask is not None and torch.backends.cuda.cudnn_sdp_enabled() else out

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", sdpa)


def test_cudnn_attention_is_off_while_training(cfg, clean_run, tmp_path, monkeypatch):
    _fake_cudnn_attention(monkeypatch)
    # the fake bites outside the trainer: masked (padded) batches get NaN gradients
    from em_interp.models import load_model

    lm = load_model(cfg.model, device="cpu")
    ids = torch.tensor([[5, 6, 7, 8], [5, 6, 7, 0]])
    out = lm.model(input_ids=ids, attention_mask=torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]]))
    out.logits.sum().backward()
    assert not all(torch.isfinite(p.grad).all() for p in lm.model.parameters() if p.grad is not None)

    # without the trainer's switch, the fake bites in training too (each such step is skipped)
    import contextlib

    with monkeypatch.context() as m:
        m.setattr(loop, "_no_cudnn_attention", contextlib.nullcontext)
        m.setattr(loop, "NONFINITE_STEP_LIMIT", 100)
        bitten = train(replace(cfg, output_dir=str(tmp_path / "bitten")), examples=_examples())
    assert bitten.metadata["skipped_nonfinite_steps"]

    assert torch.backends.cuda.cudnn_sdp_enabled()
    r = train(replace(cfg, output_dir=str(tmp_path / "run")), examples=_examples())
    assert torch.backends.cuda.cudnn_sdp_enabled()  # restored after training
    assert r.metadata["skipped_nonfinite_steps"] == [] and r.metadata["sdpa_cudnn"] is False
    a, b = _adapter(r.adapter_dir), _adapter(clean_run.adapter_dir)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nan_gradient_with_a_finite_loss_skips_that_update(cfg, clean_run, tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="em_interp.train.loop")
    _poison_steps(monkeypatch, {3})
    models = []
    real_make = loop.make_trainable
    monkeypatch.setattr(loop, "make_trainable", lambda *a, **k: models.append(real_make(*a, **k)) or models[-1])
    weights: dict[int, dict[str, torch.Tensor]] = {}
    infos = []

    def snapshot(info):
        infos.append(info)
        weights[info["step"]] = {n: p.detach().clone() for n, p in models[0].named_parameters() if p.requires_grad}

    out = tmp_path / "run"
    r = train(replace(cfg, output_dir=str(out)), examples=_examples(), on_step=snapshot)

    for n in weights[2]:
        assert torch.equal(weights[3][n], weights[2][n]), n                 # step 3 did not move the weights
        assert torch.isfinite(weights[6][n]).all(), n
    assert any(not torch.equal(weights[4][n], weights[3][n]) for n in weights[3])  # training went on
    assert [i["skipped"] for i in infos] == [False, False, True, False, False, False]
    assert math.isfinite(infos[2]["loss"]) and math.isnan(infos[2]["grad_norm"])

    meta = _strict_meta(out)
    assert meta["finished"] and meta["steps"] == 6
    [skip] = meta["skipped_nonfinite_steps"]
    assert skip["step"] == 3 and skip["grad_norm"] == "nan" and math.isfinite(skip["loss"])
    assert [c["step"] for c in meta["loss_curve"]] == [1, 2, 4, 5, 6]
    assert all(math.isfinite(c["loss"]) for c in meta["loss_curve"])
    assert r.metadata["skipped_nonfinite_steps"] == meta["skipped_nonfinite_steps"]
    # the lr schedule follows the data: step 4 has the lr of the clean run's step 4
    assert meta["loss_curve"][2]["lr"] == clean_run.metadata["loss_curve"][3]["lr"]
    warnings = [x.getMessage() for x in caplog.records if x.levelno == logging.WARNING]
    assert any("step 3/6" in w and "gradient norm is nan" in w for w in warnings)
    assert any("1 of 6 steps were skipped" in w and "steps 3" in w for w in warnings)
    a = _adapter(r.adapter_dir)
    assert all(torch.isfinite(v).all() for v in a.values())


def test_more_nonfinite_steps_than_the_limit_stop_the_run(cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "NONFINITE_STEP_LIMIT", 1)
    _poison_steps(monkeypatch, {2, 4})
    out = tmp_path / "run"
    with pytest.raises(TrainError, match=r"gradient norm is nan at step 4: 2 steps .*steps 2, 4.*limit of 1.*step-2"):
        train(replace(cfg, output_dir=str(out), save_steps=2), examples=_examples())
    assert (out / "checkpoints" / "step-2" / "adapter_model.safetensors").exists()
    meta = _strict_meta(out)
    assert not meta["finished"] and [s["step"] for s in meta["skipped_nonfinite_steps"]] == [2, 4]
    assert [c["step"] for c in meta["loss_curve"]] == [1, 3]


def test_resume_keeps_the_skipped_steps(cfg, tmp_path, monkeypatch, kill_at):
    """Skipped at step 3, killed at step 5 (state of step 4), resumed: the same adapter and
    record as an uninterrupted run with the same skip."""
    base = replace(cfg, save_steps=2)
    with monkeypatch.context() as m:
        _poison_steps(m, {3})
        ref = train(replace(base, output_dir=str(tmp_path / "ref")), examples=_examples())

    out = tmp_path / "run"
    with monkeypatch.context() as m:
        _poison_steps(m, {3})
        with pytest.raises(kill_at.error):
            train(replace(base, output_dir=str(out)), examples=_examples(), on_step=kill_at(5))
    resumed = train(replace(base, output_dir=str(out)), examples=_examples(), resume=True)  # no poison left
    assert resumed.metadata["resumed_from_step"] == 4
    assert resumed.metadata["skipped_nonfinite_steps"] == ref.metadata["skipped_nonfinite_steps"]
    assert [s["step"] for s in resumed.metadata["skipped_nonfinite_steps"]] == [3]
    assert resumed.metadata["loss_curve"] == ref.metadata["loss_curve"]
    a, b = _adapter(resumed.adapter_dir), _adapter(ref.adapter_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
