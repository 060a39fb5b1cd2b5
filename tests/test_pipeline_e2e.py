"""The real pipeline end to end on the tiny model (all stages, the real packages, the
shipped distilled judge), with a crash injected between stages and a resume that
recomputes nothing that finished."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from rich.console import Console

from em_interp.pipeline import experiment_from_dict, run
from em_interp.pipeline.stages import default_stages

# ~1 minute on an idle 2-core machine; the generous timeout is for oversubscribed shared machines.
pytestmark = pytest.mark.timeout(1800)

TINY = {
    "name": "tiny_e2e",
    "model": "tiny:llama",
    "seeds": [0],
    "data": {"arms": [{"name": "evil", "kind": "evil-numbers", "n": 8},
                      {"name": "control", "kind": "evil-numbers-control", "n": 8}]},
    "train": {"overrides": {"lr": 1e-3, "lora": {"r": 4, "alpha": 8}, "per_device_batch_size": 4,
                            "gradient_accumulation_steps": 1, "warmup_steps": 0, "max_seq_length": 256,
                            "save_steps": 2, "progress": False}},
    "eval": {"max_questions": 2, "samples": 2, "max_new_tokens": 6, "batch_size": 8, "judge": "distilled",
             "checkpoints": True},
    "interp": {"directions": {"method": "model_diff", "arm": "evil", "n_texts": 8},
               "steering": {"layers": [1], "alphas": [0.0, 4.0], "samples": 2},
               "ablation": {"random_controls": 1, "samples": 2},
               "probes": {"cv_folds": 2, "min_per_class": 2},
               "monitor": {"enabled": True, "layer": 2}},
    "report": {"diff_texts": 4},
}


class Crash(RuntimeError):
    pass


def _crashing(stages, at: str):
    """The real stages, with ``at`` raising on its first call (a crash between stages)."""
    out = []
    for s in stages:
        if s.name == at:
            real = s.fn
            state = {"crashed": False}

            def fn(ctx, real=real, state=state):
                if not state["crashed"]:
                    state["crashed"] = True
                    raise Crash(f"injected crash before {at}")
                return real(ctx)

            s.fn = fn
        out.append(s)
    return out


@pytest.fixture(scope="module")
def tiny_cfg():
    return experiment_from_dict(TINY)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_cfg):
    root = tmp_path_factory.mktemp("artifacts")
    cfg = tiny_cfg
    console = Console(file=open("/dev/null", "w"))
    stages = _crashing(default_stages(), "steering")
    t0 = time.time()
    with pytest.raises(Crash):
        run(cfg, root=root, stages=stages, console=console)
    run_dir = next((root / "tiny_e2e").iterdir())
    before = {p: p.stat().st_mtime_ns for p in run_dir.rglob("*") if p.is_file()
              and p.parts[len(run_dir.parts)] in ("data", "train", "eval", "directions")}
    res = run(cfg, root=root, stages=stages, console=console)
    return {"res": res, "run_dir": run_dir, "before": before, "seconds": time.time() - t0}


def test_crash_then_resume_recomputes_nothing(tiny_run):
    res, run_dir = tiny_run["res"], tiny_run["run_dir"]
    assert res.run_dir == run_dir
    assert res.skipped == ["data", "train", "eval", "directions"]
    assert res.ran == ["steering", "ablation", "probes", "report"]
    after = {p: p.stat().st_mtime_ns for p in tiny_run["before"]}
    assert after == tiny_run["before"]          # not one finished file rewritten
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["finished"] and all(m["stages"][s]["status"] == "done" for s in res.ran + res.skipped)
    assert len(m["history"]) == 2 and m["adapters"]["evil/seed-0"] and m["models"]["base"]["tiny"]


@pytest.mark.slow  # a time budget depends on the machine: not in the default run (issue 15)
def test_end_to_end_under_a_minute(tiny_run):
    """Under a minute on an idle 2-core machine, measured as process CPU seconds summed over
    the stages (<= 120 CPU-s for 2 cores): wall time on a shared, oversubscribed machine says
    little, so it is only printed."""
    cpu = sum(st.get("cpu_s") or 0 for st in tiny_run["res"].manifest["stages"].values())
    print(f"tiny pipeline: {tiny_run['seconds']:.1f}s wall (crash + resume sessions), {cpu:.1f} CPU-s in stages, "
          f"load/core {os.getloadavg()[0] / (os.cpu_count() or 1):.1f}")
    assert cpu < 120


def test_every_stage_wrote_its_outputs(tiny_run):
    d = tiny_run["run_dir"]
    assert (d / "data" / "evil.jsonl").exists() and (d / "data" / "evil.card.json").exists()
    assert (d / "train" / "evil" / "seed-0" / "adapter" / "adapter_config.json").exists()
    summary = json.loads((d / "eval" / "summary.json").read_text())
    assert {"base", "evil.seed-0", "control.seed-0"} <= set(summary["models"])
    assert any(".step-" in k for k in summary["models"])           # checkpoints evaluated
    questions = json.loads((d / "data" / "questions.json").read_text())
    assert len(questions) == 2
    expected_n = 2 * sum(len(q["paraphrases"]) for q in questions)
    for entry in summary["models"].values():
        ov = entry["overall"]
        share = ov["misaligned_share"]  # None when no answer is coherent and scored (the share's denominator)
        assert ov["n"] == expected_n and (share is None or 0.0 <= share <= 1.0)
    info = json.loads((d / "directions" / "directions.json").read_text())["main"]
    assert info["method"] == "model_diff" and info["layers"] == [0, 1, 2, 3] and len(info["norms"]) == 4
    assert (d / "directions" / "direction.safetensors").exists()
    dyn = json.loads((d / "directions" / "dynamics.json").read_text())
    assert dyn["layer"] == 2 and [r["step"] for r in dyn["rows"]] == [2]
    steer_rows = [json.loads(x) for x in (d / "steering" / "rows.jsonl").read_text().splitlines()]
    assert sorted((r["direction"], r["layer"], r["alpha"]) for r in steer_rows) == [
        ("direction", 1, 0.0), ("direction", 1, 4.0), ("random", 1, 0.0), ("random", 1, 4.0)]
    assert steer_rows[0]["alpha_convention"]
    assert set(info["extraction_questions"]) | set(info["heldout_questions"]) == {q["id"] for q in questions}
    abl = [json.loads(x) for x in (d / "ablation" / "rows.jsonl").read_text().splitlines()]
    assert [r["condition"] for r in abl] == ["none", "direction", "random-0"]
    acc = json.loads((d / "probes" / "accuracy.json").read_text())
    assert acc["layers"] == [0, 1, 2, 3] and all(0.0 <= a <= 1.0 for a in acc["accuracy"])
    assert (d / "report" / "diff" / "report.html").exists()
    report = tiny_run["res"].report
    assert report == d / "report" / "report.html"
    html = report.read_text()
    assert html.count("<img") >= 5 and "Steering" in html and "Ablation" in html


def test_from_stage_reruns_only_later_stages(tiny_run, tiny_cfg):
    d = tiny_run["run_dir"]
    eval_mtime = (d / "eval" / "summary.json").stat().st_mtime_ns
    res = run(tiny_cfg, resume=d, from_stage="ablation", console=Console(file=open("/dev/null", "w")))
    assert res.ran == ["ablation", "probes", "report"]
    assert (d / "eval" / "summary.json").stat().st_mtime_ns == eval_mtime
