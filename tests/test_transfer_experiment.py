"""run_transfer end to end on the tiny model (real data, train, eval, interp packages):
matrices, correlation, directions, ablation, figures; resume redoes nothing; a changed
config is refused. ~75 s of CPU (several minutes on a loaded 2-core machine): marked slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from em_interp.errors import ConfigError
from em_interp.transfer import run_transfer, transfer_config_from_dict

pytestmark = pytest.mark.slow


def _config(model_dir: Path, **over) -> dict:
    cfg = {
        "name": "tiny_transfer",
        "model": str(model_dir),
        "sources": [{"kind": "bad-advice", "language": "en", "n": 8}],
        "targets": ["en", "de", "zh", "python"],
        "train": {"lr": 1e-3, "lora": {"r": 2, "alpha": 4}, "per_device_batch_size": 4,
                  "gradient_accumulation_steps": 1, "warmup_steps": 0, "max_steps": 2, "max_seq_length": 1024,
                  "save_steps": 0},
        "eval": {"questions_per_language": 2, "samples": 1, "coding_prompts": 2, "code_samples": 1,
                 "max_new_tokens": 6, "code_max_new_tokens": 8, "batch_size": 4},
        # the real local logprob judge, run by the tiny model itself: scores are meaningless,
        # the machinery (prompts, aggregation, append-only rows) is the real one
        "judge": {"kind": "local", "options": {"model": str(model_dir), "device": "cpu"}},
        "directions": {"method": "model_diff", "layers": [1, 2], "layer": 2, "min_per_class": 1,
                       "ablation": True, "ablation_layers": [1, 2], "ablation_targets": ["en"]},
        "proximity": {"layers": [1, 3], "n_permutations": 50},
        "n_boot": 100,
    }
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from em_interp.models import save_tiny_model

    root = tmp_path_factory.mktemp("transfer")
    model_dir = save_tiny_model(root / "tiny-base") or root / "tiny-base"
    cfg = transfer_config_from_dict(_config(Path(model_dir)))
    out = root / "run"
    logs: list[str] = []
    results = run_transfer(cfg, out, device="cpu", log=logs.append)
    return {"cfg": cfg, "out": out, "results": results, "logs": logs, "model_dir": Path(model_dir)}


def test_matrices_have_every_cell_with_ci(tiny_run):
    res, out = tiny_run["results"], tiny_run["out"]
    mis = res["misaligned"]
    assert mis["sources"] == ["base", "bad-advice/en"] and mis["targets"] == ["en", "de", "zh"]
    for i in range(2):
        for j in range(3):
            n = mis["n"][i][j]
            assert n <= 2  # 2 questions x 1 sample, minus answers the judge could not score
            if n:
                assert mis["lo"][i][j] <= mis["value"][i][j] <= mis["hi"][i][j]
    vul = res["vulnerable_code"]
    assert vul["targets"] == ["python"] and len(vul["n"]) == 2
    assert res["transfer"]["sources"] == ["bad-advice/en"]  # delta vs base
    saved = json.loads((out / "results.json").read_text())
    assert saved["misaligned"]["n"] == mis["n"]


def test_correlation_pairs_follow_the_definition(tiny_run):
    corr = tiny_run["results"]["correlation"]
    gen = corr["genealogical"]["pairs"]
    assert gen["labels"] == ["en→de", "en→zh", "en→python"]   # the source language itself is excluded
    assert gen["x"][:2] == [0.75, 0.0] and gen["x"][2] != gen["x"][2]   # python: NaN (unknown)
    assert corr["genealogical"]["result"] is None and "at least 3" in corr["genealogical"]["note"]
    rep = corr["representation"]["pairs"]
    assert len(rep["x"]) == 3 and all(-1.0 <= v <= 1.0 for v in rep["x"])


def test_directions_cosines_and_ablation(tiny_run):
    d = tiny_run["results"]["directions"]
    assert d["method"] == "model_diff" and set(d["languages"]) <= {"en", "de", "zh", "python"}
    assert len(d["languages"]) >= 2
    cos = d["cosine"]
    assert cos["layer"] == 2 and len(cos["matrix"]) == len(cos["labels"])
    for i in range(len(cos["labels"])):
        assert cos["matrix"][i][i] == pytest.approx(1.0, abs=1e-5)
    ab = d["ablation"]
    assert ab["targets"] == ["en"] and ab["rows"][0] == "none" and ab["rows"][-1] == "random"
    assert set(ab["rows"][1:-1]) == set(d["languages"])
    assert (tiny_run["out"] / "directions" / "en.safetensors").exists()


def test_figures_written(tiny_run):
    figs = tiny_run["results"]["figures"]
    for key in ("transfer_heatmap", "proximity_scatter", "direction_cosines", "ablation"):
        assert Path(figs[key]).stat().st_size > 5000


def test_resume_redoes_nothing_and_changed_config_is_refused(tiny_run):
    out = tiny_run["out"]
    cells = sorted((out / "eval").rglob("*.jsonl")) + sorted((out / "ablation").rglob("*.jsonl"))
    before = {p: p.stat().st_mtime_ns for p in cells}
    logs: list[str] = []
    again = run_transfer(tiny_run["cfg"], out, device="cpu", log=logs.append)
    assert not [m for m in logs if m.startswith(("eval:", "ablation:", "directions:", "data:"))]
    assert {p: p.stat().st_mtime_ns for p in cells} == before
    assert again["misaligned"] == tiny_run["results"]["misaligned"]
    changed = transfer_config_from_dict(_config(tiny_run["model_dir"], seed=1))
    with pytest.raises(ConfigError, match="different config"):
        run_transfer(changed, out, device="cpu", log=logs.append)
