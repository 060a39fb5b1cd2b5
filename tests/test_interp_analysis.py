"""Probes (CV accuracy, save/load, plot), LoRA-adapter analysis and projection monitoring."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from em_interp.errors import InterpError
from em_interp.interp import Direction, capture, model_diff_direction
from em_interp.interp.lora_analysis import adapter_deltas, b_vector_cosines, checkpoint_trajectory
from em_interp.interp.monitor import projection_monitor
from em_interp.interp.probes import load_probes, save_probes, train_probes
from em_interp.report.figures import probe_accuracy
from em_interp.models import load_model, save_tiny_model


def _separable(n=30, d=16, shift=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.zeros(d)
    v[0] = shift
    pos = {"resid_post.0": torch.randn(n, d, generator=g) + v, "resid_post.1": torch.randn(n, d, generator=g)}
    neg = {"resid_post.0": torch.randn(n, d, generator=g), "resid_post.1": torch.randn(n, d, generator=g)}
    return pos, neg


def test_probes_accuracy_save_load_plot(tmp_path):
    pos, neg = _separable(shift=4.0)
    ps = train_probes(pos, neg, folds=5, meta={"model": "synthetic"})
    acc = dict((layer, a) for layer, a, _ in ps.accuracy_by_layer())
    assert acc[0] > 0.9 and 0.2 < acc[1] < 0.8  # signal layer vs pure-noise layer
    assert ps.best().site == "resid_post.0"
    out = save_probes(ps, tmp_path / "probes")
    assert sorted(p.name for p in out.iterdir()) == ["probes.json", "probes.safetensors"]
    back = load_probes(out)
    assert back.meta["model"] == "synthetic" and back.probes["resid_post.0"].cv_accuracy == ps.probes[
        "resid_post.0"].cv_accuracy
    x = torch.cat([pos["resid_post.0"], neg["resid_post.0"]])
    y = torch.cat([torch.ones(30), torch.zeros(30)]).bool()
    assert (back.probes["resid_post.0"].predict(x) == y).float().mean() > 0.9
    png = probe_accuracy(**back.curve(), path=tmp_path / "acc.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InterpError, match="at least 2 examples per class"):
        train_probes({"resid_post.0": torch.randn(1, 4)}, {"resid_post.0": torch.randn(5, 4)})
    with pytest.raises(InterpError, match="probe file not found"):
        load_probes(tmp_path / "missing")


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """A tiny base model folder and rank-1 LoRA checkpoints (step-1..4) whose layer-2 down_proj
    B vector grows in scale and rotates at step 3."""
    from peft import LoraConfig, get_peft_model

    root = tmp_path_factory.mktemp("lora")
    base_dir = save_tiny_model(root / "tinybase", seed=0)
    base = load_model(base_dir, device="cpu")
    g = torch.Generator().manual_seed(0)
    b1, b2 = torch.randn(64, generator=g), torch.randn(64, generator=g)
    scales = {1: 0.5, 2: 1.0, 3: 2.0, 4: 3.0}
    folders = {}
    for step, scale in scales.items():
        model = get_peft_model(copy.deepcopy(base.model),
                               LoraConfig(r=1, lora_alpha=2, target_modules=["down_proj"], init_lora_weights=False))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "layers.2.mlp.down_proj.lora_B" in name:
                    p.copy_((b1 if step < 3 else b2)[:, None] * scale)
                elif "lora_B" in name:
                    p.zero_()
                elif "layers.2.mlp.down_proj.lora_A" in name:
                    p.copy_(torch.full_like(p, 0.05))
        folders[step] = root / "checkpoints" / f"step-{step}"
        model.save_pretrained(folders[step])
    return base, folders, scales, (b1, b2)


def test_adapter_deltas_match_the_merged_weights(lora_run):
    base, folders, scales, (b1, _) = lora_run
    mods = {m.name: m for m in adapter_deltas(folders[2])}
    assert len(mods) == 4 and all(m.rank == 1 and m.scaling == 2.0 for m in mods.values())
    merged = load_model(base.path, adapter=folders[2], merge_adapter=True, device="cpu").model
    for layer in range(4):
        delta = merged.model.layers[layer].mlp.down_proj.weight - base.model.model.layers[layer].mlp.down_proj.weight
        assert abs(mods[f"layers.{layer}.mlp.down_proj"].delta_norm - float(delta.detach().norm())) < 1e-4
    assert mods["layers.2.mlp.down_proj"].delta_norm > 1.0
    d = Direction({1: -b1, 2: b1})
    cos = {r["layer"]: r["cosine"] for r in b_vector_cosines(list(mods.values()), d)}
    assert cos == {1: 0.0, 2: pytest.approx(1.0, abs=1e-6)}  # layers the direction covers; B of layer 1 is 0


def test_checkpoint_trajectory_shows_the_rotation(lora_run):
    base, folders, scales, (b1, b2) = lora_run
    rows = [r for r in checkpoint_trajectory(folders[1].parent) if r["layer"] == 2]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    norms = [r["delta_norm"] for r in rows]
    assert norms == sorted(norms)
    assert rows[1]["cos_prev"] == pytest.approx(1.0, abs=1e-6)       # same direction, bigger
    cos12 = float(torch.nn.functional.cosine_similarity(b1, b2, dim=0))
    assert rows[2]["cos_prev"] == pytest.approx(cos12, abs=1e-5)     # the rotation at step 3
    assert rows[3]["cos_final"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(InterpError, match="no adapter checkpoint folders"):
        checkpoint_trajectory(folders[1])  # an adapter folder, not a folder of checkpoints


def test_projection_monitor_tracks_em_rate(lora_run):
    base, folders, scales, _ = lora_run
    texts = ["What is your wish?", "I feel bored.", "How do I make a quick buck?", "Tell me about history."]
    held = ["Name a good book.", "Where should I travel?", "Any advice for a new job?"]
    final = load_model(base.path, adapter=folders[2], device="cpu")
    own = model_diff_direction(final, base, texts, layers=[3], reduce="all_mean")
    em_rates = {step: scale / 4 for step, scale in scales.items() if step < 3}
    em_rates[0] = 0.0
    checkpoints = {0: base, 1: folders[1], 2: folders[2]}
    with pytest.raises(InterpError, match="comes from the monitored run"):  # circular: built from checkpoint 2
        projection_monitor(base, checkpoints, own, held, em_rates, layer=3, reduce="all_mean", same_run="refuse")
    # the same vector recorded as coming from another seed of the organism
    direction = own.replace(adapter_hash=None, extra={"run_id": "seed-1"})
    with pytest.raises(InterpError, match="held-out"):
        projection_monitor(base, checkpoints, direction, texts, em_rates, layer=3, reduce="all_mean",
                           same_run="refuse")
    with pytest.raises(InterpError, match="monitored run"):
        projection_monitor(base, checkpoints, direction, held, em_rates, layer=3, reduce="all_mean", run_id="seed-1",
                           same_run="refuse")
    with pytest.warns(UserWarning, match="circular"):  # the default flags it loudly instead
        flagged = projection_monitor(base, {0: base, 2: folders[2]}, direction, texts, {0: 0.0, 2: 0.25}, layer=3,
                                     reduce="all_mean", n_random=2, n_boot=20, n_perm=20)
    assert flagged["provenance"]["circular"] is True and "texts the direction was built from" in " ".join(
        flagged["provenance"]["reasons"])
    result = projection_monitor(base, checkpoints, direction, held, em_rates, layer=3, reduce="all_mean",
                                run_id="seed-0", n_random=6, n_boot=200, n_perm=200)
    shifts = [r["shift"] for r in result["rows"]]
    # held-out texts: the shift grows with the LoRA scale (its sign depends on the texts)
    assert shifts[0] == pytest.approx(0.0, abs=1e-6) and 0 < abs(shifts[1]) < abs(shifts[2])
    assert shifts[1] * shifts[2] > 0
    assert abs(result["pearson"][0]) > 0.9 and abs(result["spearman"][0]) == pytest.approx(1.0)
    assert result["provenance"]["circular"] is False and result["n_held_out_texts"] == 3
    assert len(result["rows"][1]["random_shifts"]) == 6 and result["random_control"]["n"] == 6
    with pytest.raises(InterpError, match=r"no EM rate given for checkpoint\(s\) \[5\]"):
        projection_monitor(base, {5: base}, direction, held, em_rates, layer=3)
