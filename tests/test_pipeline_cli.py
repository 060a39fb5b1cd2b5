"""`em-interp run`: --check prints the plan; a bad config is one line naming file:line:field, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from em_interp.cli import main

DEMO = Path(__file__).resolve().parents[1] / "experiments" / "demo.yaml"


def test_check_prints_the_plan(capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(DEMO), "--check"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "demo.yaml: ok" in out and "smollm2-135m-instruct" in out
    for stage in ("data", "train", "eval", "directions", "steering", "ablation", "probes", "report"):
        assert f"  {stage}" in out


def test_bad_config_is_one_line_with_file_line_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel: tiny:llama\neval:\n  samples: lots\n")
    with pytest.raises(SystemExit) as e:
        main(["run", str(bad)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith(f"error: {bad}:4: field 'eval.samples': expected int")


def test_unknown_from_stage_is_reported(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["run", str(DEMO), "--from", "training", "--root", str(tmp_path / "a")])
    assert e.value.code == 2
    assert "unknown stage 'training'" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
