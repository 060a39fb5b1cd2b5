"""Steering (alpha=0 exact no-op, alpha * unit vector, tokens under KV-cached generation, nesting,
no leaks), ablation (zero and mean modes, all layers, random control, cross-model) and sweeps
(with the same-norm random control)."""

from __future__ import annotations

import json

import pytest
import torch

from em_interp.errors import InterpError
from em_interp.interp import Direction, ablate, capture, random_direction_like, steer, steering_sweep


@pytest.fixture(scope="module")
def direction():
    g = torch.Generator().manual_seed(0)
    return Direction({1: torch.randn(64, generator=g), 2: torch.randn(64, generator=g)}, model="tiny-llama")


def _hooks(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def _logits(lm, ids):
    with torch.no_grad():
        return lm.model(ids).logits


def test_alpha_zero_is_exactly_a_no_op(tiny_lm, direction):
    ids = tiny_lm.chat_ids("What is your wish?")
    ref = _logits(tiny_lm, ids)
    for positions in ("all", "prompt", "response"):
        with steer(tiny_lm, direction, 0.0, tokens=positions):
            assert torch.equal(_logits(tiny_lm, ids), ref)


def test_steering_adds_alpha_v_exactly(tiny_lm, direction):
    # read layer inputs with pre-hooks (transformers 5 fills output_hidden_states from its own
    # hooks, which may run before ours and then miss the edit)
    ids = tiny_lm.chat_ids("What is your wish?")
    seen = {}
    layers = tiny_lm.model.model.layers
    handles = [layers[i].register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(i, a[0].clone()))
               for i in (2, 3)]
    try:
        with torch.no_grad():
            tiny_lm.model(ids)
            ref = dict(seen)
            with steer(tiny_lm, direction, 3.0, layers=[2]):
                tiny_lm.model(ids)
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(seen[2], ref[2])                      # before layer 2: untouched
    u = direction[2] / direction[2].norm()  # ALPHA_CONVENTION: alpha times the unit-norm direction
    torch.testing.assert_close(seen[3], ref[3] + 3.0 * u, rtol=1e-6, atol=1e-6 * float(ref[3].abs().max()))
    assert float((seen[3] - ref[3]).norm(dim=-1).max()) == pytest.approx(3.0, rel=1e-4)


def test_hooks_removed_after_exception_and_nesting(tiny_lm, direction):
    ids = tiny_lm.chat_ids("hello")
    before = _hooks(tiny_lm.model)
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny_lm, direction, 2.0):
            raise RuntimeError("boom")
    assert _hooks(tiny_lm.model) == before
    with steer(tiny_lm, direction, 2.0, layers=[1]):
        outer = _logits(tiny_lm, ids)
        with steer(tiny_lm, direction, 5.0, layers=[2]):
            both = _logits(tiny_lm, ids)
        assert torch.equal(_logits(tiny_lm, ids), outer)  # inner exit removed only its own hooks
        assert not torch.equal(both, outer)
        with ablate(tiny_lm, direction, layers=[2]):
            pass
        assert torch.equal(_logits(tiny_lm, ids), outer)
    assert _hooks(tiny_lm.model) == before


def test_positions_stay_right_under_kv_cached_generation(tiny_lm, direction):
    """Record which absolute positions get edited during generate(): 'prompt' edits only the
    prompt pass, 'response' only the generated tokens (one per cached step)."""
    ids = tiny_lm.chat_ids("What is your wish?")
    T = ids.shape[1]
    seen = []
    layer3 = tiny_lm.model.model.layers[3]

    def record(module, args, out):  # resid_post.2 + alpha*v shows up in layer 3's input
        seen.append(args[0].detach().clone())
    gen_kw = dict(max_new_tokens=4, do_sample=False, pad_token_id=tiny_lm.tokenizer.pad_token_id)
    h = layer3.register_forward_hook(record)
    try:
        with torch.no_grad():
            base = tiny_lm.model.generate(ids, **gen_kw)
            base_seen, seen[:] = list(seen), []
            with steer(tiny_lm, direction, 50.0, layers=[2], tokens="response"):
                resp = tiny_lm.model.generate(ids, **gen_kw)
            resp_seen, seen[:] = list(seen), []
            with steer(tiny_lm, direction, 50.0, layers=[2], tokens="prompt"):
                tiny_lm.model.generate(ids, **gen_kw)
            prompt_seen = list(seen)
    finally:
        h.remove()
    assert base_seen[0].shape[1] == T and all(s.shape[1] == 1 for s in base_seen[1:])  # KV cache in use
    # response: prompt pass untouched, every later cached step is shifted
    assert torch.equal(resp_seen[0], base_seen[0])
    assert torch.equal(resp[0, T], base[0, T])  # first new token comes from the unsteered prompt pass
    assert all((r - b).abs().max() > 1.0 for r, b in zip(resp_seen[1:], base_seen[1:]))
    # prompt: prompt pass shifted by exactly alpha * v at every position, generated steps not edited
    shift = prompt_seen[0] - base_seen[0]
    u = direction[2] / direction[2].norm()
    torch.testing.assert_close(shift[0], (50.0 * u).expand(T, -1), rtol=0, atol=1e-4)
    # (later steps differ only through the steered KV cache, never by the direct +alpha*v)
    for p_step, b_step in zip(prompt_seen[1:], base_seen[1:]):
        assert torch.dot((p_step - b_step)[0, 0], direction[2] / direction[2].norm()) < 25.0


def test_steer_errors(tiny_lm, direction):
    with pytest.raises(InterpError, match="d_model 32 but the model has d_model 64"):
        with steer(tiny_lm, Direction({1: torch.ones(32)}), 1.0):
            pass
    with pytest.raises(InterpError, match=r"layer 9 out of range"):
        with steer(tiny_lm, direction, 1.0, layers=[9]):
            pass
    with pytest.raises(InterpError, match="no vector for layer 3"):
        with steer(tiny_lm, direction, 1.0, layers=[3]):
            pass
    with pytest.raises(InterpError, match="unknown tokens"):
        with steer(tiny_lm, direction, 1.0, tokens="last"):
            pass
    with pytest.raises(InterpError, match="broadcast=True"):  # one layer's vector is not reused silently
        with steer(tiny_lm, Direction({1: direction[1]}), 1.0, layers=[2]):
            pass
    with pytest.warns(DeprecationWarning):  # the old spelling still works
        with steer(tiny_lm, direction, 1.0, positions="prompt") as info:
            assert info["tokens"] == "prompt"


def test_ablation_removes_the_component(tiny_lm, direction):
    texts = ["What is your wish? I wish for peace.", "def read_file(path): return open(path).read()"]
    sites = ["resid_post.1", "resid_post.2", "resid_post.3"]
    plain = capture(tiny_lm, texts, sites, per_token=True)
    with ablate(tiny_lm, direction) as info:  # default layers: the direction's own
        abl = capture(tiny_lm, texts, sites, per_token=True)
    assert info["mode"] == "zero" and info["layers"] == [1, 2]
    for layer in (1, 2):
        u = direction[layer] / direction[layer].norm()
        for before, after in zip(plain.per_example[f"resid_post.{layer}"], abl.per_example[f"resid_post.{layer}"]):
            assert (before @ u).abs().max() > 1e-2  # there was a component
            assert (after @ u).abs().max() < 1e-5   # and now there is none
    one = Direction({0: direction[1]})  # a single vector ablated at every layer (+ embeddings)
    with pytest.raises(InterpError, match="broadcast=True"):
        with ablate(tiny_lm, one, layers="all"):
            pass
    with ablate(tiny_lm, one, layers="all", broadcast=True):
        every = capture(tiny_lm, texts, ["resid_pre.0"] + sites, per_token=True)
    u = direction[1] / direction[1].norm()
    for site in ["resid_pre.0"] + sites:
        assert max(float((x @ u).abs().max()) for x in every.per_example[site]) < 1e-5


def test_random_control_and_cross_model(tiny_lm, tiny_qwen, direction):
    r = random_direction_like(direction, seed=1)
    assert r.method == "random" and r.extra["like"] == direction.method
    for layer in direction.layers:
        assert abs(r[layer].norm() - direction[layer].norm()) < 1e-4
        assert abs(torch.dot(r[layer], direction[layer]) / direction[layer].norm() ** 2) < 0.5
    assert torch.equal(random_direction_like(direction, seed=1)[1], r[1])  # seeded
    # a direction from the tiny Llama applied to the tiny Qwen2 (same d_model)
    texts = ["Hello there, how are you?"]
    with ablate(tiny_qwen, direction, layers=[2]):
        out = capture(tiny_qwen, texts, ["resid_post.2"], per_token=True)
    u = direction[2] / direction[2].norm()
    assert (out.per_example["resid_post.2"][0] @ u).abs().max() < 1e-5


def test_steering_sweep_rows_and_resume(tiny_lm, direction, tmp_path):
    ids = tiny_lm.chat_ids("What is your wish?")
    ref = _logits(tiny_lm, ids)
    calls = []

    def eval_fn(lm):
        calls.append(1)
        shift = float((_logits(lm, ids) - ref).abs().max())
        return {"misaligned_share": min(1.0, shift / 10), "logit_shift": shift}

    out = tmp_path / "sweep.jsonl"
    # (random_seed 5: the fixture itself is torch.randn under seed 0, the control's default seed)
    rows = steering_sweep(tiny_lm, direction, [0.0, 4.0], [1, 2], eval_fn, out_path=out, random_seed=5)
    assert [(r["direction"], r["layer"], r["alpha"]) for r in rows] == [
        ("direction", 1, 0.0), ("random", 1, 0.0), ("direction", 1, 4.0), ("random", 1, 4.0),
        ("direction", 2, 0.0), ("random", 2, 0.0), ("direction", 2, 4.0), ("random", 2, 4.0)]
    assert all(r["alpha_convention"] == "unit" and r["resid_norm"] > 0 for r in rows)
    assert rows[2]["alpha_over_norm"] == pytest.approx(4.0 / rows[2]["resid_norm"])
    assert rows[0]["logit_shift"] == 0.0 and rows[2]["logit_shift"] > 0 and rows[3]["logit_shift"] > 0
    assert rows[2]["logit_shift"] != rows[3]["logit_shift"]  # the random control is another direction
    assert len(calls) == 6 and len(out.read_text().splitlines()) == 8  # alpha=0 random row reuses the no-op
    again = steering_sweep(tiny_lm, direction, [0.0, 4.0, 8.0], [1, 2], eval_fn, out_path=out, random_seed=5)
    assert len(calls) == 10 and len(again) == 12  # only the new (layer, alpha) pairs ran
    assert [json.loads(x)["alpha"] for x in out.read_text().splitlines()][-4:] == [8.0] * 4
    plain = steering_sweep(tiny_lm, direction, [4.0], [1], eval_fn, random_control=False)
    assert [r["direction"] for r in plain] == ["direction"] and plain[0]["logit_shift"] == rows[2]["logit_shift"]


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), "x"])
def test_non_finite_alpha_is_one_clear_error(tiny_lm, alpha):
    """NaN alpha used to blank every answer silently (issue 18)."""
    import torch

    from em_interp.errors import InterpError
    from em_interp.interp import Direction, steer, steering_sweep

    d = Direction({1: torch.ones(tiny_lm.model.config.hidden_size)})
    with pytest.raises(InterpError, match="alpha must be a finite number"):
        with steer(tiny_lm, d, alpha):
            pass
    with pytest.raises(InterpError, match="alpha must be a finite number"):
        steering_sweep(tiny_lm, d, [0.0, alpha], [1], lambda m: {})
