"""The public intervention API: ``hooks`` on canonical and TransformerLens site names, cleanup
after exceptions and nesting, ``resid_mid`` writes, ``steer`` at the direction's site kind,
mean ablation, and activation patching (every layer reproduces run A's logits)."""

from __future__ import annotations

import copy

import pytest
import torch

from em_interp.errors import InterpError
from em_interp.interp import (Direction, ablate, capture, hooks, mean_projections, parse_site, patch,
                              run_with_cache, steer)
from em_interp.interp.sites import Site
from em_interp.models.loading import LoadedModel

TEXTS = ["What is your wish? I wish for peace.", "def read_file(path): return open(path).read()"]


def _hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def _logits(lm, ids):
    with torch.no_grad():
        return lm.model(ids).logits


def _close(a, b, rtol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


def test_site_names_aliases_and_negative_layers():
    assert parse_site("blocks.1.hook_resid_post", 4) == Site(1, "resid_post")
    assert parse_site("resid_post.-1", 4) == Site(3, "resid_post")
    assert parse_site("blocks.-4.hook_mlp_out", 4) == Site(0, "mlp_out")
    assert parse_site("resid_mid.2", 4) == Site(2, "resid_mid")
    with pytest.raises(InterpError, match="out of range"):
        parse_site("resid_post.-5", 4)
    with pytest.raises(InterpError, match="TransformerLens names"):
        parse_site("blocks.1.hook_z", 4)


def test_hooks_read_and_replace_and_clean_up(tiny_lm):
    ids = tiny_lm.chat_ids("hello there")
    ref = _logits(tiny_lm, ids)
    before = _hook_counts(tiny_lm.model)
    seen = {}
    with hooks(tiny_lm, {"blocks.2.hook_resid_post": lambda h, s: seen.__setitem__(s.name, h.clone())}):
        assert torch.equal(_logits(tiny_lm, ids), ref)  # a read-only hook changes nothing
    assert set(seen) == {"resid_post.2"}
    with pytest.raises(RuntimeError, match="boom"):
        with hooks(tiny_lm, {"resid_post.1": lambda h, s: h * 0}):
            raise RuntimeError("boom")
    assert _hook_counts(tiny_lm.model) == before and torch.equal(_logits(tiny_lm, ids), ref)
    with hooks(tiny_lm, {"resid_post.-1": lambda h, s: h + 1.0}):
        outer = _logits(tiny_lm, ids)
        with hooks(tiny_lm, {"mlp_out.0": lambda h, s: h * 2}):
            both = _logits(tiny_lm, ids)
        assert torch.equal(_logits(tiny_lm, ids), outer) and not torch.equal(both, outer)
    assert _hook_counts(tiny_lm.model) == before
    with pytest.raises(InterpError, match="not callable"):
        with hooks(tiny_lm, {"resid_post.1": 3}):
            pass


def test_resid_mid_is_pre_plus_attn_and_writes_reach_the_residual(tiny_lm):
    sites = ["resid_pre.1", "attn_out.1", "resid_mid.1", "mlp_out.1", "resid_post.1"]
    cap = capture(tiny_lm, TEXTS, sites, tokens="all", per_token=True)
    for i in range(len(TEXTS)):
        pre, attn, mid, mlp, post = (cap.per_example[s][i] for s in sites)
        _close(mid, pre + attn)
        _close(post, mid + mlp)
    v = torch.randn(64, generator=torch.Generator().manual_seed(3))
    with hooks(tiny_lm, {"resid_mid.1": lambda h, s: h + v}):
        shifted = capture(tiny_lm, TEXTS, ["mlp_out.1", "resid_post.1"], tokens="all", per_token=True)
    for i in range(len(TEXTS)):  # resid_post = edited resid_mid + the MLP's output on it
        _close(shifted.per_example["resid_post.1"][i],
               cap.per_example["resid_mid.1"][i] + v + shifted.per_example["mlp_out.1"][i])


def test_steer_acts_at_the_direction_site_kind(tiny_lm):
    v = torch.randn(64, generator=torch.Generator().manual_seed(0))
    d = Direction({1: v}, site_kind="mlp_out")
    plain = capture(tiny_lm, TEXTS, ["resid_mid.1", "mlp_out.1", "resid_post.1"], tokens="all", per_token=True)
    with steer(tiny_lm, d, 2.5) as info:
        steered = capture(tiny_lm, TEXTS, ["resid_mid.1", "mlp_out.1", "resid_post.1"], tokens="all", per_token=True)
    assert info["site_kind"] == "mlp_out" and info["alpha_convention"] == "unit"
    u = v / v.norm()
    for i in range(len(TEXTS)):
        assert torch.equal(steered.per_example["resid_mid.1"][i], plain.per_example["resid_mid.1"][i])
        _close(steered.per_example["mlp_out.1"][i], plain.per_example["mlp_out.1"][i] + 2.5 * u)
        _close(steered.per_example["resid_post.1"][i], plain.per_example["resid_post.1"][i] + 2.5 * u)


def test_mean_ablation_sets_the_projection_to_the_reference_mean(tiny_lm):
    g = torch.Generator().manual_seed(1)
    d = Direction({1: torch.randn(64, generator=g), 2: torch.randn(64, generator=g)})
    reference = ["I am happy to help you today.", "Let us talk about the weather."]
    means = mean_projections(tiny_lm, d, reference)
    assert set(means) == {1, 2} and all(abs(m) > 1e-3 for m in means.values())
    with ablate(tiny_lm, d, layers=[2], mode="mean", reference=reference) as info:
        out = capture(tiny_lm, TEXTS, ["resid_post.2"], tokens="all", per_token=True)
    assert info["mode"] == "mean" and info["mean_projection"][2] == pytest.approx(means[2])
    u = d[2] / d[2].norm()
    for x in out.per_example["resid_post.2"]:
        _close(x @ u, torch.full((x.shape[0],), means[2]), rtol=1e-4)
    with pytest.raises(InterpError, match="needs reference"):
        with ablate(tiny_lm, d, mode="mean"):
            pass
    with pytest.raises(InterpError, match="unknown ablation mode"):
        with ablate(tiny_lm, d, mode="resample"):
            pass


def _lora_copy(lm: LoadedModel) -> LoadedModel:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(lm.model), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"]))
    gen = torch.Generator().manual_seed(5)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    model.eval()
    return LoadedModel(model=model, tokenizer=lm.tokenizer, name="tiny+lora", path=None)


def test_activation_patching_every_layer_reproduces_run_a(tiny_lm):
    ft = _lora_copy(tiny_lm)  # run A: the finetune; run B: the base, same embeddings / final norm / unembedding
    sites = [f"resid_post.{L}" for L in range(tiny_lm.n_layers)]
    a = run_with_cache(ft, TEXTS, sites)
    b = run_with_cache(tiny_lm, a.input_ids, sites)
    assert (a.logits - b.logits).abs().max() > 1e-3  # the two runs differ
    before = _hook_counts(tiny_lm.model)
    with patch(tiny_lm, a) as patched:
        every = run_with_cache(tiny_lm, a.input_ids)
    assert patched == sites and _hook_counts(tiny_lm.model) == before
    mask = a.attention_mask.bool()
    _close(every.logits[mask], a.logits[mask])
    with patch(tiny_lm, a, sites=["blocks.1.hook_resid_post"]):
        one = run_with_cache(tiny_lm, a.input_ids, ["resid_post.1", "resid_post.3"])
    assert torch.equal(one["resid_post.1"], a["resid_post.1"])
    assert (one.logits - b.logits).abs().max() > 1e-3  # patching one layer changes B's logits
    assert (one.logits - a.logits).abs().max() > 1e-4  # ...but the later layers are still B's
    with patch(tiny_lm, a, sites=["resid_post.3"], token_index=0):
        first = run_with_cache(tiny_lm, a.input_ids)
    _close(first.logits[:, 0], a.logits[:, 0])
    torch.testing.assert_close(first.logits[:, 1:], b.logits[:, 1:])
    with pytest.raises(InterpError, match="same tokens"):
        with patch(tiny_lm, a):
            run_with_cache(tiny_lm, ["short"])
