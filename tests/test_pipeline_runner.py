"""The stage runner on toy stages: order, .done.json markers, skip, kill + resume, --from,
invalidation on changed outputs / config, run-directory choice, manifest contents."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from rich.console import Console

from em_interp.errors import ConfigError
from em_interp.pipeline import ExperimentConfig, Stage, experiment_from_dict, load_experiment, run
from em_interp.pipeline.runner import check_done


class Boom(RuntimeError):
    pass


def toy_stages(calls: Counter, fail_at: set[str] | None = None) -> list[Stage]:
    """Five stages; each writes a file derived from the previous stage's file."""
    fail_at = fail_at if fail_at is not None else set()

    def make(name: str, prev: str | None, sections: tuple[str, ...]):
        def fn(ctx):
            calls[name] += 1
            if name in fail_at:
                fail_at.discard(name)           # fail once, like a crash
                (ctx.stage_dir / "partial.txt").write_text("half")
                raise Boom(f"injected crash in {name}")
            src = (ctx.dir(prev) / "out.txt").read_text() if prev else ctx.cfg.name
            (ctx.stage_dir / "out.txt").write_text(f"{src}>{name}{calls[name]}")
            return {"n": calls[name], **({"report": "report/out.txt"} if name == "report" else {})}
        return Stage(name, fn, sections=sections)

    spec = [("data", None, ("data",)), ("train", "data", ("train",)), ("eval", "train", ("eval",)),
            ("directions", "eval", ("interp.directions",)), ("report", "directions", ("report",))]
    return [make(*s) for s in spec]


def cfg(**kw) -> ExperimentConfig:
    d = {"name": "toy", "model": "tiny:llama", "data": {"arms": [{"name": "insecure", "kind": "insecure", "n": 4}]}}
    d.update(kw)
    return experiment_from_dict(d)


QUIET = Console(file=open("/dev/null", "w"))


def go(tmp_path, calls, **kw):
    kw.setdefault("root", tmp_path / "artifacts")
    kw.setdefault("console", QUIET)
    config = kw.pop("config", None) or cfg()
    return run(config, stages=toy_stages(calls, kw.pop("fail_at", None)), **kw)


def test_runs_all_stages_in_order_and_writes_markers(tmp_path):
    calls = Counter()
    res = go(tmp_path, calls)
    assert res.ran == ["data", "train", "eval", "directions", "report"]
    assert (res.run_dir / "report" / "out.txt").read_text() == "toy>data1>train1>eval1>directions1>report1"
    assert res.report == res.run_dir / "report" / "out.txt"
    assert res.run_dir.parent == tmp_path / "artifacts" / "toy"
    for s in res.ran:
        done = json.loads((res.run_dir / s / ".done.json").read_text())
        assert done["stage"] == s and "out.txt" in done["outputs"] and done["duration_s"] >= 0
        assert not (res.run_dir / s / ".started.json").exists()
    m = json.loads((res.run_dir / "manifest.json").read_text())
    assert m["finished"] is True and m["config_hash"] == cfg().hash()
    assert m["packages"]["torch"] and m["packages"]["python"]
    assert "commit" in m["git"]
    assert all(m["stages"][s]["status"] == "done" for s in res.ran)
    assert m["report"] == str(res.report)
    assert (res.run_dir / "config.json").exists()


def test_kill_between_stages_then_resume_recomputes_nothing(tmp_path):
    calls = Counter()
    with pytest.raises(Boom):
        go(tmp_path, calls, fail_at={"eval"})
    assert calls == Counter({"data": 1, "train": 1, "eval": 1})
    run_dir = next((tmp_path / "artifacts" / "toy").iterdir())
    m = json.loads((run_dir / "manifest.json").read_text())
    assert m["stages"]["eval"]["status"] == "failed" and "injected crash" in m["stages"]["eval"]["error"]
    assert m["finished"] is False
    mtimes = {s: (run_dir / s / "out.txt").stat().st_mtime_ns for s in ("data", "train")}

    res = go(tmp_path, calls)            # same config: continues the unfinished run
    assert res.run_dir == run_dir
    assert res.skipped == ["data", "train"] and res.ran == ["eval", "directions", "report"]
    assert calls == Counter({"data": 1, "train": 1, "eval": 2, "directions": 1, "report": 1})
    assert {s: (run_dir / s / "out.txt").stat().st_mtime_ns for s in ("data", "train")} == mtimes
    assert (run_dir / "eval" / "partial.txt").exists()  # partial outputs kept for the stage's own resume
    assert json.loads((run_dir / "manifest.json").read_text())["finished"] is True

    res = go(tmp_path, calls, resume=run_dir)   # everything valid: nothing runs
    assert res.ran == [] and sum(calls.values()) == 6


def test_finished_run_is_not_continued_by_default_but_resume_dir_is(tmp_path):
    calls = Counter()
    first = go(tmp_path, calls).run_dir
    second = go(tmp_path, calls).run_dir
    assert first != second and calls["data"] == 2
    third = go(tmp_path, calls, resume=first)
    assert third.run_dir == first and third.ran == []
    with pytest.raises(ConfigError, match="not a run directory"):
        go(tmp_path, calls, resume=tmp_path)


def test_from_stage_reruns_that_stage_and_later_ones(tmp_path):
    calls = Counter()
    run_dir = go(tmp_path, calls).run_dir
    res = go(tmp_path, calls, resume=run_dir, from_stage="eval")
    assert res.skipped == ["data", "train"] and res.ran == ["eval", "directions", "report"]
    assert calls == Counter({"data": 1, "train": 1, "eval": 2, "directions": 2, "report": 2})
    res = go(tmp_path, calls, from_stage="report")      # latest run of this config by default
    assert res.run_dir == run_dir and res.ran == ["report"]
    with pytest.raises(ConfigError, match="unknown stage 'nope'"):
        go(tmp_path, calls, resume=run_dir, from_stage="nope")


def test_changed_output_invalidates_the_stage_and_later_ones(tmp_path):
    calls = Counter()
    run_dir = go(tmp_path, calls).run_dir
    (run_dir / "train" / "out.txt").write_text("tampered")
    valid, reason = check_done(run_dir / "train", "x", {})
    assert not valid
    res = go(tmp_path, calls, resume=run_dir)
    assert res.skipped == ["data"] and res.ran == ["train", "eval", "directions", "report"]
    assert (run_dir / "train" / "out.txt").read_text() == "toy>data1>train2"
    (run_dir / "directions" / "out.txt").unlink()
    res = go(tmp_path, calls, resume=run_dir)
    assert res.ran == ["directions", "report"]


def test_config_change_reruns_only_the_stages_that_read_it(tmp_path):
    calls = Counter()
    run_dir = go(tmp_path, calls).run_dir
    changed = cfg(interp={"directions": {"n_texts": 7}})
    res = go(tmp_path, calls, resume=run_dir, config=changed)
    assert res.skipped == ["data", "train", "eval"] and res.ran == ["directions", "report"]
    changed2 = cfg(interp={"directions": {"n_texts": 7}}, seeds=[0, 1])   # seeds: every stage
    res = go(tmp_path, calls, resume=run_dir, config=changed2)
    assert res.skipped == [] and len(res.ran) == 5


def test_crashed_stage_with_changed_config_starts_clean(tmp_path):
    calls = Counter()
    with pytest.raises(Boom):
        go(tmp_path, calls, fail_at={"train"})
    run_dir = next((tmp_path / "artifacts" / "toy").iterdir())
    assert (run_dir / "train" / "partial.txt").exists()
    changed = cfg(train={"overrides": {"lr": 1e-3}})
    res = go(tmp_path, calls, resume=run_dir, config=changed)
    assert res.ran[0] == "train" and not (run_dir / "train" / "partial.txt").exists()


def test_disabled_stage_is_recorded_and_skipped(tmp_path):
    calls = Counter()
    stages = toy_stages(calls)
    stages[4].enabled = lambda c: False
    res = run(cfg(), stages=stages, root=tmp_path, console=QUIET)
    assert res.ran == ["data", "train", "eval", "directions"] and res.report is None
    assert res.manifest["stages"]["report"]["status"] == "disabled" and calls["report"] == 0


YAML_OK = """\
name: toy
model: tiny:llama
data:
  arms:
    - {name: insecure, kind: insecure, n: 8}
    - {name: secure, kind: secure, n: 8}
interp:
  directions: {arm: insecure, reference: secure}
"""


def test_config_errors_name_file_line_and_field(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(YAML_OK)
    c = load_experiment(p)
    assert c.arm_names == ["insecure", "secure"] and c.interp.directions.reference == "secure"
    p.write_text(YAML_OK.replace("reference: secure", "reference: educational"))
    with pytest.raises(ConfigError) as e:
        load_experiment(p)
    assert str(e.value).startswith(f"{p}:8: field 'interp.directions.reference'") and "educational" in str(e.value)
    p.write_text(YAML_OK.replace("n: 8}\n    - {name: secure", "n: many}\n    - {name: secure"))
    with pytest.raises(ConfigError, match=r"c.yaml:5: field 'data.arms\[0\].n': expected int"):
        load_experiment(p)
    p.write_text(YAML_OK + "eval:\n  sample: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml:10: field 'eval.sample': unknown field"):
        load_experiment(p)
    p.write_text(YAML_OK.replace("name: secure", "name: insecure"))
    with pytest.raises(ConfigError, match="arm names must be unique"):
        load_experiment(p)
