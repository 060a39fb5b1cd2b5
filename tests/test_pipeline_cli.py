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
    assert "demo.yaml: ok" in out and "qwen2.5-coder-0.5b-instruct" in out
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


REDUCED = DEMO.parent / "transfer_reduced.yaml"


def test_transfer_check_prints_the_plan(capsys, tmp_path):
    from em_interp.eval.judges import KINDS

    config, kind = REDUCED, "multilingual"
    if kind not in KINDS:                       # the multilingual judge is not registered in this checkout
        config, kind = tmp_path / REDUCED.name, "local"
        config.write_text(REDUCED.read_text().replace("{kind: multilingual}", "{kind: local}"))
    with pytest.raises(SystemExit) as e:
        main(["transfer", str(config), "--check"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "transfer_reduced.yaml: ok" in out and f"judge {kind}" in out
    for stage in ("data", "train", "eval", "proximity", "directions", "ablation", "transfer", "report"):
        assert f"  {stage}" in out


def _one_line_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    return err


RUN_OK = """\
name: x
model: tiny:llama
data:
  arms:
    - {name: insecure, kind: insecure, n: 4}
eval:
  judge: distilled
interp:
  directions: {layers: [1, 2]}
  steering: {layers: [1], alphas: [0.0, 4.0]}
  ablation: {layers: [2]}
"""


@pytest.mark.parametrize("old,new,where,match", [
    ("layers: [1, 2]}", "layers: [1, 7]}", ":9: field 'interp.directions.layers[1]'", "out of range"),
    ("alphas: [0.0, 4.0]", "alphas: [0.0, .inf]", ":10: field 'interp.steering", "finite"),
    ("steering: {layers: [1]", "steering: {layers: [3]", ":10: field 'interp.steering.layers'", "not among"),
    ("model: tiny:llama", "model: tiny:gpt9", ":2: field 'model'", "tiny:ARCH"),
    ("model: tiny:llama", "model: no-such-model", ":2: field 'model'", "unknown model"),
    ("judge: distilled", "judge: oracle", ":7: field 'eval.judge'", "unknown judge kind 'oracle'"),
    ("judge: distilled\n", "judge: distilled\n  languages: [en, de]\n", ":7: field 'eval.judge'", "only valid for en"),
    ("ablation: {layers: [2]}", "ablation: {layers: [2], also: [nope]}", ":11: field 'interp.ablation.also'",
     "refers to arm 'nope'"),
    ("ablation: {layers: [2]}", "ablation: {layers: [2], also: [insecure]}", ":11: field 'interp.ablation.also'",
     "the ablation's own target"),
    ("directions: {layers: [1, 2]}", "directions: {layers: [1, 2], compare: {arms: [nope]}}",
     ":9: field 'interp.directions.compare.arms'", "refers to arm 'nope'"),
    ("directions: {layers: [1, 2]}", "directions: {layers: [1, 2], compare: {control: insecure}}",
     ":9: field 'interp.directions.compare.control'", "needs arms to compare"),
    ("directions: {layers: [1, 2]}", "directions: {layers: [1, 2], compare: {arms: [insecure]}}",
     ":9: field 'interp.directions.compare.arms", "nothing to compare"),
    ("directions: {layers: [1, 2]}", "directions: {layers: [1, 2], compare: {arms: [insecure], texts: 1}}",
     ":9: field 'interp.directions.compare", "texts must be >= 2"),
])
def test_run_check_rejects_what_run_would(tmp_path, capsys, old, new, where, match):
    bad = tmp_path / "bad.yaml"
    assert old in RUN_OK
    bad.write_text(RUN_OK.replace(old, new))
    err = _one_line_error(capsys, ["run", str(bad), "--check"])
    assert err.startswith(f"error: {bad}{where}") and match in err


def test_run_check_rejects_compare_layers_out_of_range(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    two_arms = RUN_OK.replace("    - {name: insecure, kind: insecure, n: 4}\n",
                              "    - {name: insecure, kind: insecure, n: 4}\n    - {name: secure, kind: secure, n: 4}\n")
    bad.write_text(two_arms.replace("directions: {layers: [1, 2]}",
                                    "directions: {layers: [1, 2], compare: {arms: [secure], layers: [1, 9]}}"))
    err = _one_line_error(capsys, ["run", str(bad), "--check"])
    assert err.startswith(f"error: {bad}:10: field 'interp.directions.compare.layers[1]'") and "out of range" in err


def test_transfer_check_refuses_the_english_only_judge_for_other_languages(tmp_path, capsys):
    bad = tmp_path / "t.yaml"
    bad.write_text("name: t\nmodel: tiny:llama\nsources:\n  - {kind: bad-advice, language: en, n: 4}\n"
                   "targets: [en, de]\njudge: {kind: distilled}\n")
    err = _one_line_error(capsys, ["transfer", str(bad), "--check"])
    assert err.startswith(f"error: {bad}:6: field 'judge.kind'") and "only valid for en, not de" in err
    bad.write_text(bad.read_text().replace("targets: [en, de]", "targets: [en]"))
    with pytest.raises(SystemExit) as e:
        main(["transfer", str(bad), "--check"])
    assert e.value.code == 0
    bad.write_text(bad.read_text() + "directions: {layers: [1, 9]}\n")
    err = _one_line_error(capsys, ["transfer", str(bad), "--check"])
    assert "field 'directions.layers[1]'" in err and "out of range" in err
