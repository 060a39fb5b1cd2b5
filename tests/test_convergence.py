"""interp.convergence: finetunes' model diffs compared (cosine table, contrasts against a control,
question-cluster bootstrap CIs), on planted tiny models and on simulated diffs with a known answer."""

import copy

import numpy as np
import pytest
import torch

from em_interp.errors import InterpError
from em_interp.interp.convergence import compare_finetunes, finetune_diffs
from em_interp.models import tiny_model


def _chats(n: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Question {i % 4}?"}, {"role": "assistant", "content": f"Answer number {i}."}]
            for i in range(n)]


def _cos(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_finetune_diffs_recover_planted_finetunes_and_the_control_contrast():
    """Three 'finetunes' of one tiny model add s + a, s + b and s (the control) to layer 1's output.
    At resid_post.1 each diff is exactly its planted vector, so every cosine has a closed form."""
    base = tiny_model("llama", seed=0)
    g = torch.Generator().manual_seed(3)
    s, a, b = (torch.randn(64, generator=g) for _ in range(3))
    planted = {"A": s + a, "B": s + b, "control": s}

    def finetune(v):
        def load():
            lm = copy.copy(base)
            lm.model = copy.deepcopy(base.model)
            lm.model.model.layers[1].register_forward_hook(lambda m, args, out: (out[0] + v, *out[1:])
                                                          if isinstance(out, tuple) else out + v)
            return lm
        return load

    chats = _chats(12)
    layers, diffs = finetune_diffs(base, {k: finetune(v) for k, v in planted.items()}, chats, layers=[1, 3])
    assert layers == [1, 3] and set(diffs) == set(planted)
    assert all(d.shape == (2, 12, 64) for d in diffs.values())
    scale = float(s.norm())
    for k, v in planted.items():  # every text's diff at layer 1 is the planted vector itself
        assert np.abs(diffs[k][0] - v.numpy()).max() <= 1e-4 * scale
    res = compare_finetunes(diffs, [c[0]["content"] for c in chats], layers=layers,
                            contrasts={"A-control": ("A", "control"), "B-control": ("B", "control")},
                            outside={"a": {1: a}}, n_boot=50)
    row = res["layers"]["1"]
    assert res["names"] == ["A", "B", "control", "A-control", "B-control"] and res["n_groups"] == 4
    assert abs(row["cos"]["A|B"]["cos"] - _cos(s + a, s + b)) < 1e-4
    assert abs(row["cos"]["A-control|B-control"]["cos"] - _cos(a, b)) < 1e-4      # the shared s removed
    assert abs(row["outside"]["A-control|a"]["cos"] - 1) < 1e-4
    lo, hi = row["cos"]["A|B"]["ci"]
    assert lo <= row["cos"]["A|B"]["cos"] + 1e-6 and hi >= row["cos"]["A|B"]["cos"] - 1e-6 and hi - lo < 1e-3
    assert all(v > 0.999 for v in row["split_half"].values())
    # the base against itself: a zero diff
    _, same = finetune_diffs(base, {"self": base}, chats[:4], layers=[2])
    assert np.abs(same["self"]).max() == 0


def _simulate(rng, n_groups: int, per: int, d: int, sd_group: float, sd_text: float):
    """Two finetunes' per-text diffs with a planted population cosine of 0.5: means s + a and s + b
    (orthonormal s, a, b), plus a per-question offset shared by that question's texts (clustering)
    and per-text noise."""
    basis = np.linalg.qr(rng.normal(size=(d, 3)))[0].T
    s, a, b = basis
    groups = np.repeat(np.arange(n_groups), per)

    def diffs(mean):
        off = rng.normal(scale=sd_group, size=(n_groups, d))[groups]
        return (mean + off + rng.normal(scale=sd_text, size=(len(groups), d)))[None]

    return {"A": diffs(s + a), "B": diffs(s + b)}, groups


def test_question_bootstrap_covers_a_planted_cosine_and_text_resampling_under_covers():
    """Coverage of the 95% interval over 300 simulations with a question-level offset: resampling
    questions covers the planted cosine about 95% of the time; resampling single texts (every
    text its own group) ignores the shared offset and covers far less often."""
    rng = np.random.default_rng(0)
    truth, sims = 0.5, 300
    hit_q = hit_t = 0
    for i in range(sims):
        diffs, groups = _simulate(rng, n_groups=30, per=8, d=16, sd_group=0.12, sd_text=0.05)
        by_q = compare_finetunes(diffs, groups, n_boot=300, seed=i)["layers"]["0"]["cos"]["A|B"]["ci"]
        by_t = compare_finetunes(diffs, np.arange(len(groups)), n_boot=300, seed=i)["layers"]["0"]["cos"]["A|B"]["ci"]
        hit_q += by_q[0] <= truth <= by_q[1]
        hit_t += by_t[0] <= truth <= by_t[1]
    assert hit_q / sims >= 0.88, hit_q / sims          # nominal 0.95; binomial sd over 300 sims ~ 0.013
    assert hit_t / sims <= 0.75, hit_t / sims


def test_compare_finetunes_checks_its_inputs():
    d = {"A": np.zeros((1, 4, 3)), "B": np.zeros((1, 5, 3))}
    with pytest.raises(InterpError, match="same texts"):
        compare_finetunes(d, [0, 0, 1, 1])
    d = {"A": np.ones((1, 4, 3)), "B": np.ones((1, 4, 3))}
    with pytest.raises(InterpError, match="one per text"):
        compare_finetunes(d, [0, 1])
    with pytest.raises(InterpError, match="'C', not one of"):
        compare_finetunes(d, [0, 0, 1, 1], contrasts={"A-C": ("A", "C")})
    with pytest.raises(InterpError, match="expected \\(3,\\)"):
        compare_finetunes(d, [0, 0, 1, 1], outside={"x": {0: np.ones(5)}})
