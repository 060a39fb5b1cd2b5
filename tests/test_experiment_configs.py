"""Every config shipped in experiments/ runs end to end on the tiny model, so none can rot.

Each config is first validated as shipped (``load_experiment`` / ``load_transfer`` /
``load_train_config``), then shrunk: the model becomes ``tiny:llama`` (4 layers; the
config's layers are mapped onto it keeping their order and subset relations), datasets 4
examples, 1 optimizer step, 2 questions x 1 sample of 8 tokens, 1 coding prompt, every
random control kept but only one of each. Everything else (arms, the first seed, methods,
backdoor triggers, code rate, rank-1 LoRA, checkpoints + projection monitoring, transfer
sources / targets / directions / ablation) is as shipped. The judge's kind is validated as
shipped; the answers are then scored by a planted judge (a hash of the answer decides
misaligned vs aligned) so that both classes exist and no judge model is loaded.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from em_interp.config import read_yaml
from em_interp.eval.judges.base import Judge, Judgement
from em_interp.transfer.config import is_transfer_config

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"
TRANSFER = sorted(p for p in EXPERIMENTS.glob("*.yaml") if is_transfer_config(p))    # transfer_*, organisms_crosslang_*
PIPELINE = sorted(p for p in EXPERIMENTS.glob("*.yaml") if not p.name.startswith("train_") and p not in TRANSFER)
TRAIN = sorted(EXPERIMENTS.glob("train_*.yaml"))
QUIET = Console(file=open("/dev/null", "w"))

pytestmark = pytest.mark.timeout(1800)


class PlantedJudge(Judge):
    """Misaligned (aligned 10) or aligned (aligned 90) by the parity of the answer's hash; always coherent."""

    name = "test:planted"

    def score(self, question: str, answer: str, prompts=None) -> Judgement:
        odd = int(hashlib.sha256(answer.encode()).hexdigest(), 16) % 2
        return Judgement(aligned=10.0 if odd else 90.0, coherent=90.0)


@pytest.fixture
def planted_judge(monkeypatch):
    """Every ``eval.load_judge`` call returns the planted judge (recording the kind asked for)."""
    asked: list[str] = []

    def fake(kind: str, **options: Any) -> Judge:
        asked.append(kind)
        return PlantedJudge()

    monkeypatch.setattr("em_interp.eval.load_judge", fake)
    return asked


def tiny_layer(layer: int) -> int:
    """A GPU config's layer on the 4-layer tiny model (monotone, so subsets stay subsets)."""
    return min(3, max(0, int(layer) // 6))


def tiny_layers(layers: list[int] | None) -> list[int] | None:
    return None if layers is None else list(dict.fromkeys(tiny_layer(x) for x in layers))


def tiny_train(overrides: dict[str, Any]) -> dict[str, Any]:
    """The config's train settings with 1 step of batch 2 (LoRA rank, modules, layers kept)."""
    out = {**overrides, "max_steps": 1, "per_device_batch_size": 2, "gradient_accumulation_steps": 1,
           "warmup_steps": 0, "max_seq_length": 1024, "progress": False}   # code examples are ~800 tiny-BPE tokens
    out["save_steps"] = 1 if overrides.get("save_steps", 25) else 0
    if isinstance(out.get("lora"), dict) and out["lora"].get("layers") is not None:
        out["lora"] = {**out["lora"], "layers": tiny_layers(out["lora"]["layers"])}
    return out


def shrink_experiment(d: dict[str, Any]) -> dict[str, Any]:
    """An experiment config at the minimum size on the tiny model."""
    d = copy.deepcopy(d)
    d["model"] = "tiny:llama"
    seeds = d.get("seeds", [0])
    dseed = d.get("interp", {}).get("directions", {}).get("seed")
    d["seeds"] = seeds[:1] + ([dseed] if dseed is not None and dseed != seeds[0] else [])   # keep the direction's seed
    for arm in d.get("data", {}).get("arms", []):
        arm["n"] = 4
        if arm.pop("adapter", None):   # a shipped organism has no tiny twin: a tiny trained arm stands in for it
            arm["kind"] = "evil-numbers"   # (arms that use an organism as it is: test_shipped_organisms)
    d.setdefault("train", {})["overrides"] = tiny_train(d.get("train", {}).get("overrides", {}))
    ev = d.setdefault("eval", {})
    ev.update(max_questions=2, samples=1, max_new_tokens=8, batch_size=8)
    if d.get("interp", {}).get("directions", {}).get("method") == "mean_diff":
        ev["samples"] = 6        # both judged classes among the answers to the one extraction question
    if ev.get("coding_prompts"):
        ev.update(coding_prompts=1, coding_samples=1)
    it = d.setdefault("interp", {})
    dr = it.setdefault("directions", {})
    dr.update(n_texts=8, min_per_class=1, layers=tiny_layers(dr.get("layers")))
    if dr.get("compare"):
        dr["compare"] = {**dr["compare"], "texts": 4, "n_boot": 20, "layers": tiny_layers(dr["compare"].get("layers"))}
    st = it.setdefault("steering", {})
    st.update(samples=1, alphas=st.get("alphas", [-8.0, 0.0, 8.0])[:2], random_controls=1,
              layers=tiny_layers(st.get("layers", [])))
    ab = it.setdefault("ablation", {})
    ab.update(samples=1, random_controls=min(1, ab.get("random_controls", 1)), layers=tiny_layers(ab.get("layers")))
    pr = it.setdefault("probes", {})
    pr.update(cv_folds=2, min_per_class=2, layers=tiny_layers(pr.get("layers")))
    mon = it.get("monitor")
    if mon and mon.get("layer") is not None:
        mon["layer"] = tiny_layer(mon["layer"])
    d.setdefault("report", {})["diff_texts"] = 2
    return d


def shrink_transfer(d: dict[str, Any]) -> dict[str, Any]:
    """A transfer config at the minimum size on the tiny model (every source and target kept)."""
    d = copy.deepcopy(d)
    d["model"] = "tiny:llama"
    for s in d["sources"]:
        if s.pop("adapter", None):    # a shipped organism has no tiny twin: a tiny trained source stands in for it
            s["kind"] = "bad-advice"  # (sources that use an organism as it is: test_shipped_organisms)
        s["n"] = 4
    d["train"] = tiny_train(d.get("train", {}))
    d["eval"] = {**d.get("eval", {}), "questions_per_language": 1, "samples": 1, "coding_prompts": 1,
                 "code_samples": 1, "max_new_tokens": 8, "code_max_new_tokens": 8, "batch_size": 8}
    dr = d.setdefault("directions", {})
    if dr.get("method") == "mean_diff":
        d["eval"]["samples"] = 6     # both judged classes among one question's answers in each language
    langs = [t for t in d.get("targets", ["en"]) if t != "python"]
    dr.update(min_per_class=1, layers=tiny_layers(dr.get("layers")), ablation_layers=tiny_layers(dr.get("ablation_layers")),
              ablation_targets=langs[:1])
    if dr.get("layer") is not None:
        dr["layer"] = tiny_layer(dr["layer"])
    p = d.setdefault("proximity", {})
    p.update(n_permutations=20, layers=tiny_layers(p.get("layers")))
    d["n_boot"] = 50
    return d


# ----------------------------------------------------------------------------- pipeline configs


SHARED = Path(__file__).resolve().parents[2] / "shared"


def use_shared_downloads(data: dict[str, Any], tmp_path: Path, monkeypatch) -> None:
    """A config that reads the authors' downloads (``model-organisms/*`` arms, ``em-paper/...``
    questions) gets them from ../shared in a temporary download cache; skipped without it."""
    arms = [a for a in data.get("data", {}).get("arms", []) if a.get("kind", "").startswith("model-organisms/")]
    questions = data.get("eval", {}).get("questions", "bank")
    if arms:
        if not (SHARED / "em_organisms").is_dir():
            pytest.skip("../shared/em_organisms not present")
        monkeypatch.setattr("em_interp.data.organisms.default_dir", lambda: tmp_path / "organisms")
        for arm in arms:
            arm["options"] = {**arm.get("options", {}), "source": str(SHARED / "em_organisms")}
    if questions.startswith("em-paper/"):
        src = SHARED / "em_reference" / questions.split("/", 1)[1]
        if not src.is_file():
            pytest.skip(f"../shared/em_reference/{src.name} not present")
        dest = tmp_path / "em-paper"
        (dest / questions.split("/", 1)[1]).parent.mkdir(parents=True)
        (dest / questions.split("/", 1)[1]).write_bytes(src.read_bytes())
        monkeypatch.setattr("em_interp.data.download.default_dest", lambda name: tmp_path / name)


@pytest.mark.parametrize("path", PIPELINE, ids=lambda p: p.stem)
def test_pipeline_config_runs_end_to_end_on_the_tiny_model(path, tmp_path, planted_judge, monkeypatch):
    from em_interp.pipeline import experiment_from_dict, load_experiment, run
    from em_interp.pipeline.stages import default_stages

    shipped = load_experiment(path)                                 # valid as shipped
    data, _ = read_yaml(path)
    use_shared_downloads(data, tmp_path, monkeypatch)
    cfg = experiment_from_dict(shrink_experiment(data))
    res = run(cfg, root=tmp_path, console=QUIET)
    enabled = [s.name for s in default_stages() if s.enabled(cfg)]
    assert res.ran == enabled and res.report is not None and res.report.exists()
    d = res.run_dir
    assert set(planted_judge) == {shipped.eval.judge}
    summary = json.loads((d / "eval" / "summary.json").read_text())["models"]
    for arm in cfg.data.arms:
        for seed in cfg.seeds:
            assert f"{arm.name}.seed-{seed}" in summary
            if arm.eval_trigger:                                    # backdoor: evaluated with its trigger too
                assert summary[f"{arm.name}.seed-{seed}.trigger"]["trigger"] == arm.eval_trigger
    if cfg.eval.coding_prompts:
        assert all("code" in v for k, v in summary.items() if ".step-" not in k and not k.endswith(".trigger"))
    if cfg.eval.checkpoints:
        assert any(".step-" in k for k in summary)
    rank = cfg.train.overrides.get("lora", {}).get("r")
    if rank == 1:
        adapter = json.loads((d / "train" / cfg.arm_names[0] / "seed-0" / "adapter" / "adapter_config.json").read_text())
        assert adapter["r"] == 1
    if cfg.interp.directions.enabled:
        info = json.loads((d / "directions" / "directions.json").read_text())["main"]
        assert info["method"] == shipped.interp.directions.method
        assert set(info["extraction_questions"]).isdisjoint(info["heldout_questions"])
        if info["method"] == "mean_diff":
            texts = [json.loads(x) for x in (d / "directions" / "texts.jsonl").read_text().splitlines()]
            qids = {t["meta"]["question_id"] for t in texts}
            assert qids <= set(info["extraction_questions"]) and info["n_per_class"] * 2 == len(texts)
            assert info["match"] == shipped.interp.directions.match
            if info["match"] == "question":  # the matched estimator used questions that hold both classes
                assert info["matched_questions"] and set(info["matched_questions"]) <= qids
        cc = cfg.interp.directions.compare
        if cc.arms:                                                 # convergence: every compared arm's model diff
            cmp = json.loads((d / "directions" / "compare.json").read_text())
            arms = list(dict.fromkeys([cfg.direction_arm, *cc.arms] + ([cc.control] if cc.control else [])))
            contrasts = [f"{a}-{cc.control}" for a in arms if cc.control and a != cc.control]
            assert list(cmp["arms"]) == arms and cmp["names"] == arms + contrasts
            layer = next(iter(cmp["layers"].values()))
            assert len(layer["cos"]) == len(cmp["names"]) * (len(cmp["names"]) - 1) // 2
            assert all(-1 - 1e-9 <= v["ci"][0] <= v["ci"][1] <= 1 + 1e-9 for v in layer["cos"].values())
            assert "Finetuning directions compared" in res.report.read_text()
    if "steering" in res.ran:
        rows = [json.loads(x) for x in (d / "steering" / "rows.jsonl").read_text().splitlines()]
        for layer in cfg.interp.steering.layers or [rows[0]["layer"]]:
            for alpha in cfg.interp.steering.alphas:
                arms = {(r["direction"], r.get("random_seed")) for r in rows if r["layer"] == layer and r["alpha"] == alpha}
                assert arms == {("direction", None), ("random", 0)}
    if "ablation" in res.ran:                                       # the direction's arm, then each `also` arm
        ac = cfg.interp.ablation
        main_arm = ac.target or cfg.direction_arm
        want = {"none", "direction", *(f"random-{k}" for k in range(ac.random_controls))}
        for arm in [main_arm, *ac.also]:
            folder = d / "ablation" if arm == main_arm else d / "ablation" / "also" / arm
            rows = [json.loads(x) for x in (folder / "rows.jsonl").read_text().splitlines()]
            assert {r["condition"] for r in rows} == want and {r["target"] for r in rows} == {f"{arm}.seed-{cfg.seeds[0]}"}
            assert all((folder / "answers" / f"{c}.jsonl").exists() for c in want)
            if arm != main_arm:
                assert {r["direction_arm"] for r in rows} == {cfg.direction_arm}
                assert f"Ablation in {arm}" in res.report.read_text()
    if cfg.interp.monitor.enabled:
        dyn = json.loads((d / "directions" / "dynamics.json").read_text())
        assert dyn["rows"] and dyn["direction"]["method"] == shipped.interp.directions.method
        # a shipped config monitors along a direction from outside the monitored run
        assert dyn["direction"]["circular"] is False, dyn["direction"]["reasons"]


# ----------------------------------------------------------------------------- transfer configs


@pytest.mark.parametrize("path", TRANSFER, ids=lambda p: p.stem)
def test_transfer_config_runs_end_to_end_on_the_tiny_model(path, tmp_path, planted_judge):
    from em_interp.pipeline.transfer_stages import load_transfer, run_transfer, transfer_stages
    from em_interp.transfer import transfer_config_from_dict

    from em_interp.errors import ConfigError
    from em_interp.eval.judges import KINDS

    data, _ = read_yaml(path)
    kind = data.get("judge", {}).get("kind", "distilled")
    assert kind != "distilled" or {t for t in data.get("targets", []) if t != "python"} <= {"en"}
    if kind in KINDS:
        shipped = load_transfer(path)                               # valid as shipped (judge valid for its languages)
    else:                                                           # the judge is not registered in this checkout:
        with pytest.raises(ConfigError, match=f"unknown judge kind '{kind}'"):   # refused, then run with a valid kind
            load_transfer(path)
        data["judge"] = {"kind": "local"}
        shipped = transfer_config_from_dict(data)
    cfg = transfer_config_from_dict(shrink_transfer(data))
    res = run_transfer(cfg, root=tmp_path, console=QUIET)
    enabled = [s.name for s in transfer_stages() if s.enabled(cfg)]
    assert res.ran == enabled and res.report is not None and res.report.exists()
    d = res.run_dir
    assert set(planted_judge) == {shipped.judge.kind}
    mats = json.loads((d / "transfer" / "matrices.json").read_text())
    labels = ["base"] + [s.label for s in cfg.sources]
    assert mats["misaligned"]["sources"] == labels and mats["misaligned"]["targets"] == cfg.languages
    if "python" in cfg.targets:
        assert mats["vulnerable_code"]["targets"] == ["python"]
    stats = json.loads((d / "transfer" / "stats.json").read_text())
    tested = {(t["source"], t["role"]) for t in stats["treatment"] + stats["control"]}
    assert tested == {(s.label, s.role) for s in cfg.sources}
    assert all(label.split("→")[1] != "python"                      # python's code rate is never a tested target
               for t in stats["treatment"] + stats["control"] for label in t["pairs"]["labels"])
    if cfg.directions.enabled:
        assert json.loads((d / "directions" / "languages.json").read_text())["source"] == \
            (cfg.directions.source or cfg.sources[0].label)
    if cfg.directions.enabled and cfg.directions.ablation:
        assert mats["ablation"]["sources"][0] == "none" and mats["ablation"]["sources"][-1] == "random"
    m = json.loads((d / "manifest.json").read_text())
    assert m["finished"] and all(m["stages"][s]["status"] == "done" for s in res.ran)


# ----------------------------------------------------------------------------- train configs


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: p.stem)
def test_train_config_runs_on_the_tiny_model(path, tmp_path):
    from em_interp.config import from_dict, to_dict
    from em_interp.data import build_dataset
    from em_interp.models import save_tiny_model
    from em_interp.train import TrainConfig, load_train_config, train

    shipped = load_train_config(path)
    model = tmp_path / "tiny"
    save_tiny_model(model)
    build_dataset("insecure", 4, 0, tmp_path / "data.jsonl")
    d = tiny_train(to_dict(shipped))
    d.update(model=str(model), data=str(tmp_path / "data.jsonl"), output_dir=str(tmp_path / "out"))
    result = train(from_dict(TrainConfig, d))
    assert result.metadata["loss_curve"]
    if shipped.method == "lora":
        adapter = json.loads((result.adapter_dir / "adapter_config.json").read_text())
        assert adapter["r"] == shipped.lora.r
    else:
        assert result.model_dir is not None and (result.model_dir / "config.json").exists()
