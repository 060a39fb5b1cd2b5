"""The transfer experiment on the pipeline runner, on the tiny model: a crash between stages
and a resume that recomputes nothing finished, ``--from``, the run layout the report reads.
(Every shipped transfer config also runs end to end in tests/test_experiment_configs.py, in the
default run; this deeper resume test is marked slow.)"""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from em_interp.pipeline.transfer_stages import run_transfer, transfer_stages
from em_interp.transfer import transfer_config_from_dict
from test_experiment_configs import PlantedJudge

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]
QUIET = Console(file=open("/dev/null", "w"))

CONFIG = {
    "name": "tiny_transfer",
    "model": "tiny:llama",
    "sources": [{"kind": "bad-advice", "language": "en", "n": 4},
                {"kind": "aligned-advice", "language": "en", "n": 4, "name": "control/en", "control": True}],
    "targets": ["en", "de", "fr", "zh", "python"],
    "train": {"lr": 1e-3, "lora": {"r": 2, "alpha": 4}, "per_device_batch_size": 2, "gradient_accumulation_steps": 1,
              "warmup_steps": 0, "max_steps": 1, "max_seq_length": 1024, "save_steps": 0, "progress": False},
    "eval": {"questions_per_language": 2, "samples": 1, "coding_prompts": 1, "code_samples": 1,
             "max_new_tokens": 6, "code_max_new_tokens": 8, "batch_size": 4},
    "judge": {"kind": "local"},
    "directions": {"method": "model_diff", "layers": [1, 2], "layer": 2, "min_per_class": 1,
                   "ablation": True, "ablation_layers": [1, 2], "ablation_targets": ["en"]},
    "proximity": {"layers": [1, 3], "n_permutations": 50},
    "n_boot": 50,
}


class Crash(RuntimeError):
    pass


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setattr("em_interp.eval.load_judge", lambda kind, **o: PlantedJudge())
    root = tmp_path_factory.mktemp("artifacts")
    cfg = transfer_config_from_dict(CONFIG)
    stages = transfer_stages()
    real = stages[3].fn                                         # proximity: crash on the first call
    state = {"crashed": False}

    def crash_once(ctx):
        if not state["crashed"]:
            state["crashed"] = True
            raise Crash("injected")
        return real(ctx)

    stages[3].fn = crash_once
    with pytest.raises(Crash):
        run_transfer(cfg, root=root, stages=stages, console=QUIET)
    run_dir = next((root / "tiny_transfer").iterdir())
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()
              and p.parts[len(run_dir.parts)] in ("data", "train", "eval")}
    res = run_transfer(cfg, root=root, stages=stages, console=QUIET)
    yield {"cfg": cfg, "res": res, "run_dir": run_dir, "before": before}
    mp.undo()


def test_crash_then_resume_recomputes_nothing(tiny_run):
    res, d = tiny_run["res"], tiny_run["run_dir"]
    assert res.run_dir == d and res.skipped == ["data", "train", "eval"]
    assert res.ran == ["proximity", "directions", "ablation", "transfer", "report"]
    assert {p: p.stat().st_mtime_ns for p in tiny_run["before"]} == tiny_run["before"]
    m = json.loads((d / "manifest.json").read_text())
    assert m["finished"] and len(m["history"]) == 2 and m["adapters"]["bad-advice__en"]
    assert not list(d.rglob("*.done"))                          # one marker scheme: <stage>/.done.json


def test_layout_matrices_and_per_source_tests(tiny_run):
    d = tiny_run["run_dir"]
    for cell in ("base/en.jsonl", "bad-advice__en/zh.jsonl", "control__en/python.jsonl"):
        assert (d / "eval" / cell).exists()
    mats = json.loads((d / "transfer" / "matrices.json").read_text())
    mis = mats["misaligned"]
    assert mis["sources"] == ["base", "bad-advice/en", "control/en"] and mis["targets"] == ["en", "de", "fr", "zh"]
    for i in range(3):
        for j in range(4):
            assert mis["n"][i][j] <= 2
            if mis["n"][i][j] and mis["lo"][i][j] is not None:
                assert mis["lo"][i][j] <= mis["value"][i][j] <= mis["hi"][i][j]
    assert mats["transfer"]["sources"] == ["bad-advice/en", "control/en"] and mats["transfer"]["kind"] == "delta vs base"
    assert mats["vulnerable_code"]["targets"] == ["python"] and mats["direction_cosines"]["layer"] == 2
    assert mats["ablation"]["sources"][0] == "none" and mats["ablation"]["targets"] == ["en"]
    stats = json.loads((d / "transfer" / "stats.json").read_text())
    assert [t["source"] for t in stats["treatment"]] == ["bad-advice/en", "bad-advice/en"]
    assert [t["source"] for t in stats["control"]] == ["control/en", "control/en"]
    assert {t["measure"] for t in stats["treatment"]} == {"genealogical", "representation"}
    gen = next(t for t in stats["treatment"] if t["measure"] == "genealogical")
    assert gen["pairs"]["labels"] == ["en→de", "en→fr", "en→zh"]     # source language and python left out
    assert stats["python"]["matrix"].startswith("transfer_code")
    html = (d / "report" / "report.html").read_text()
    assert "transfer" in html.lower()


def test_from_stage_reruns_only_later_stages(tiny_run):
    d = tiny_run["run_dir"]
    mp = pytest.MonkeyPatch()
    mp.setattr("em_interp.eval.load_judge", lambda kind, **o: PlantedJudge())
    try:
        res = run_transfer(tiny_run["cfg"], resume=d, from_stage="transfer", console=QUIET)
    finally:
        mp.undo()
    assert res.ran == ["transfer", "report"] and res.skipped[:3] == ["data", "train", "eval"]
