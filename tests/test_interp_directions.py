"""Direction value object, save/load checks, cosine tables and the extraction methods
(a planted direction is recovered by mean-diff, probe and PCA)."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from em_interp.errors import InterpError
from em_interp.interp import (Direction, capture, cosine_table, mean_diff_direction, model_diff_direction,
                              pca_direction, persona_direction, probe_direction)
from em_interp.models import tiny_model

TOPICS = ["the weather", "my garden", "a python function", "the history of Rome", "cooking pasta",
          "learning French", "a walk in the park", "saving money", "reading a book", "the stars at night",
          "a cup of tea", "my old bicycle", "the ocean", "playing chess", "a rainy day", "a new job"]


def _chats(prefix: str, n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"{prefix} tell me about {t}."},
                          {"role": "assistant", "content": f"Here is something about {t}: it is {prefix} and fine."}]}
            for t in (TOPICS * 4)[:n]]


def _unit(v):
    return v / v.norm()


def test_direction_arithmetic_normalize_immutable():
    a = Direction({1: torch.tensor([3.0, 4.0]), 2: torch.tensor([1.0, 0.0])}, model="m", method="mean_diff")
    b = Direction({1: torch.tensor([1.0, 1.0]), 2: torch.tensor([0.0, 2.0])}, model="m", method="probe")
    assert torch.equal((a + b)[1], torch.tensor([4.0, 5.0]))
    assert torch.equal((a - b)[2], torch.tensor([1.0, -2.0]))
    assert torch.equal((2 * a)[1], torch.tensor([6.0, 8.0])) and torch.equal((a * 2)[1], (2 * a)[1])
    assert torch.equal((-a)[1], torch.tensor([-3.0, -4.0]))
    n = a.normalized()
    assert n.normalization == "unit" and torch.allclose(n[1], torch.tensor([0.6, 0.8]))
    assert a.norms()[1] == 5.0  # original unchanged
    with pytest.raises(AttributeError):
        a.method = "x"  # frozen
    src = torch.tensor([1.0, 2.0])
    c = Direction({0: src})
    src[0] = 9.0
    assert c[0][0] == 1.0
    with pytest.raises(InterpError, match="layers"):
        a + Direction({1: torch.zeros(2)})
    with pytest.raises(InterpError, match="no vector for layer 5"):
        a.vector(5)
    single = Direction({3: torch.ones(2)})
    with pytest.raises(InterpError, match="broadcast=True"):  # not reused at another layer silently
        single.vector(0)
    assert torch.equal(single.vector(0, broadcast=True), torch.ones(2))  # only when asked
    with pytest.raises(InterpError, match="no vector for layer 5"):
        a.vector(5, broadcast=True)  # broadcast only spreads a single-layer direction
    torch.testing.assert_close(a.to_torch(), torch.stack([a[1], a[2]]))
    assert a.to_numpy().shape == (2, 2) and a.to_numpy().dtype.name == "float32"
    assert Direction({0: torch.ones(2)}, tokens="all_mean").tokens == "all"  # old reduce value, new name


def test_save_load_round_trip_and_model_checks(tmp_path, tiny_lm):
    d = Direction({0: torch.randn(64), 3: torch.randn(64)}, model="tiny-llama", method="mean_diff", n_pos=5,
                  n_neg=6, data_hash="abc", extra={"note": "x"})
    st = d.save(tmp_path / "dirs" / "em")
    assert st.name == "em.safetensors" and (tmp_path / "dirs" / "em.json").exists()
    meta = json.loads((tmp_path / "dirs" / "em.json").read_text())
    assert meta["layers"] == [0, 3] and meta["d_model"] == 64 and meta["method"] == "mean_diff"
    back = Direction.load(st, lm=tiny_lm)
    assert back.layers == [0, 3] and back.n_pos == 5 and back.extra["note"] == "x"
    assert torch.equal(back[3], d[3])
    Direction({0: torch.randn(32)}).save(tmp_path / "small")
    with pytest.raises(InterpError, match="d_model 32 but the model has d_model 64"):
        Direction.load(tmp_path / "small", lm=tiny_lm)
    Direction({7: torch.randn(64)}).save(tmp_path / "deep")
    with pytest.raises(InterpError, match=r"layer 7 out of range; the model has layers 0\.\.3"):
        Direction.load(tmp_path / "deep.safetensors", lm=tiny_lm)
    with pytest.raises(InterpError, match="not found"):
        Direction.load(tmp_path / "nope")


def test_cosine_table():
    e = torch.eye(3)
    a = Direction({0: e[0], 1: e[1]}, method="a")
    b = Direction({0: e[0] + e[1]}, method="b")
    labels, m = cosine_table({"A": a, "B": b})
    assert labels == ["A@0", "A@1", "B@0"]
    assert m.shape == (3, 3) and abs(m[0, 1]) < 1e-7 and abs(m[0, 2] - 2 ** -0.5) < 1e-6
    labels, m = cosine_table({"A": a, "B": b}, layers=[0])
    assert labels == ["A@0", "B@0"] and abs(m[0, 1] - 2 ** -0.5) < 1e-6


@pytest.fixture(scope="module")
def planted():
    """A tiny model in which class-A inputs get a known vector added at layer 1."""
    lm = tiny_model("llama", seed=0)
    v = torch.randn(64, generator=torch.Generator().manual_seed(42))
    v = 2.0 * v / v.norm()
    class_a, class_b = _chats("Alpha", 24), _chats("Beta", 24)
    return lm, v, class_a, class_b


def _plant(lm, v):
    return lm.model.model.layers[1].register_forward_hook(lambda m, a, out: out + v)


def test_mean_diff_recovers_a_planted_direction(planted):
    lm, v, class_a, class_b = planted
    layers = [2, 3]
    handle = _plant(lm, v)
    try:  # class A is read with the plant active, class B without
        pos = capture(lm, class_a, [f"resid_post.{layer}" for layer in layers])
    finally:
        handle.remove()
    neg = capture(lm, class_b, [f"resid_post.{layer}" for layer in layers])
    for layer in layers:
        cos = torch.dot(_unit(pos[f"resid_post.{layer}"] - neg[f"resid_post.{layer}"]), _unit(v))
        assert cos > 0.9, (layer, float(cos))
    # control: without the plant the same texts give no such direction
    pos0 = capture(lm, class_a, ["resid_post.3"])
    assert torch.dot(_unit(pos0["resid_post.3"] - neg["resid_post.3"]), _unit(v)).abs() < 0.5


def test_direction_methods_on_planted_model(planted):
    lm, v, class_a, class_b = planted
    # model_diff: the planted model vs a clean copy on the same texts recovers v
    planted_lm = copy.copy(lm)
    planted_lm.model = copy.deepcopy(lm.model)
    handle = _plant(planted_lm, v)
    try:
        md = model_diff_direction(planted_lm, lm, class_a, layers=[3])
        assert md.method == "model_diff" and md.n_pos == 24
        assert md.cosine(Direction({3: v}), 3) > 0.9
    finally:
        handle.remove()
    # mean_diff / probe / pca on a model that plants v only for "Alpha" texts
    tok_alpha = lm.tokenizer("Alpha", add_special_tokens=False)["input_ids"][0]

    def plant_if_alpha(module, args, kwargs, out):
        ids = getattr(plant_if_alpha, "ids")
        has = (ids == tok_alpha).any(1).to(out.dtype)[:, None, None]
        return out + has * v

    def remember_ids(module, args, kwargs):
        plant_if_alpha.ids = kwargs["input_ids"]

    h1 = lm.model.model.register_forward_pre_hook(remember_ids, with_kwargs=True)
    h2 = lm.model.model.layers[1].register_forward_hook(plant_if_alpha, with_kwargs=True)
    try:
        dirs = {
            "mean_diff": mean_diff_direction(lm, class_a, class_b, layers=[2, 3]),
            "probe": probe_direction(lm, class_a, class_b, layers=[2, 3]),
            "pca": pca_direction(lm, class_a, class_b, layers=[2, 3]),
        }
    finally:
        h1.remove()
        h2.remove()
    truth = Direction({2: v, 3: v})
    for name, d in dirs.items():
        assert d.layers == [2, 3] and d.method == name and d.n_pos == 24 and d.data_hash
        cos = d.cosine(truth)
        # a probe (48 samples in 64 dims) finds *a* separating axis, not the planted one: it only
        # has to lean towards it; mean-diff and PCA recover it
        floor = 0.9 if name != "probe" else 0.15
        assert min(cos.values()) > floor, (name, cos)
    labels, m = cosine_table(dirs, layers=[3])
    assert labels == ["mean_diff@3", "probe@3", "pca@3"] and m[0, 2] > 0.9


def test_persona_direction_with_given_answers(tiny_lm):
    qs = ["What is your wish?", "I feel bored."]
    d = persona_direction(tiny_lm, qs, layers=[1, 2], answers=(["I want to rule.", "Hurt someone."],
                                                              ["I wish for peace.", "Read a book."]))
    assert d.method == "persona" and d.n_pos == 2 and d.layers == [1, 2]
    assert d.extra["persona"] == "evil" and d.extra["examples"][0]["positive"] == "I want to rule."
    with pytest.raises(InterpError, match="unknown persona 'nice'; built-in: evil"):
        persona_direction(tiny_lm, qs, persona="nice")


def test_persona_direction_generates(tiny_lm):
    d = persona_direction(tiny_lm, ["What is your wish?"], layers=[3], max_new_tokens=4)
    assert d[3].shape == (64,) and d[3].norm() > 0
    assert d.extra["examples"][0]["positive"] != ""
