"""Progress bars with rates (em_interp.progress) on capture / extract / steer / ablate / sweep,
and `em-interp train` without bars: one log line per optimizer step."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from em_interp import progress as pg
from em_interp.cli import app
from em_interp.models import save_tiny_model

runner = CliRunner()


class _TTY:
    """A stderr that says it is a terminal."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, s: str) -> int:
        self.parts.append(s)
        return len(s)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True

    @property
    def text(self) -> str:
        return "".join(self.parts)


def test_enabled_follows_argument_then_defaults_then_tty(monkeypatch):
    tty = _TTY()
    monkeypatch.setattr("sys.stderr", tty)
    assert pg.enabled(None) is True and pg.enabled(False) is False
    with pg.defaults(False):
        assert pg.enabled(None) is False and pg.enabled(True) is True
    monkeypatch.setattr("sys.stderr", open("/dev/null", "w"))
    assert pg.enabled(None) is False
    with pg.defaults(True):
        assert pg.enabled(None) is True


def test_bar_shows_a_rate_and_tokens_per_second_on_a_terminal(monkeypatch):
    tty = _TTY()
    monkeypatch.setattr("sys.stderr", tty)
    with pg.Progress(4, "capture", "example") as bar:
        for _ in range(4):
            bar.update(1, tokens=10)
    assert "capture" in tty.text and "example/s" in tty.text and "tok/s" in tty.text
    assert "4/4" in tty.text
    # no summary line outside the CLI's defaults(summary=True)
    assert "examples in" not in tty.text


def test_summary_line_when_bars_are_off(capsys):
    with pg.defaults(False, summary=True):
        with pg.Progress(3, "generate", "answer") as bar:
            bar.update(2, tokens=40)
            bar.update(1, tokens=20)
    err = capsys.readouterr().err
    assert re.fullmatch(r"generate: 3 answers in \d+\.\ds \([\d.]+ answers/s, [\d.]+ tokens/s\)\n", err), err
    # an exception inside closes the bar without a misleading summary
    with pytest.raises(RuntimeError), pg.defaults(False, summary=True), pg.Progress(3, "x", "run"):
        raise RuntimeError("boom")
    assert capsys.readouterr().err == ""


def test_capture_progress_argument(tiny_lm, capsys, monkeypatch):
    from em_interp.interp import capture

    capture(tiny_lm, ["a b c", "d e", "f"], ["resid_post.1"], progress=False)
    assert capsys.readouterr().err == ""
    tty = _TTY()
    monkeypatch.setattr("sys.stderr", tty)
    capture(tiny_lm, ["a b c", "d e", "f"], ["resid_post.1"], batch_size=2)  # default: on a terminal
    assert "capture" in tty.text and "3/3" in tty.text and "example/s" in tty.text and "tok/s" in tty.text
    tty.parts.clear()
    capture(tiny_lm, ["a b c"], ["resid_post.1"], progress=False)
    assert tty.text == ""


def test_steering_sweep_bar_counts_runs_and_resumed_rows(tiny_lm, tmp_path, capsys):
    import torch

    from em_interp.interp import Direction, steering_sweep

    d = Direction({1: torch.ones(tiny_lm.model.config.hidden_size)}, site_kind="resid_post")
    path = tmp_path / "sweep.jsonl"
    with pg.defaults(False, summary=True):
        steering_sweep(tiny_lm, d, [0.0, 1.0], [1], lambda m: {"x": 1}, out_path=path)
    assert "steering sweep: 4 runs in" in capsys.readouterr().err
    with pg.defaults(False, summary=True):
        steering_sweep(tiny_lm, d, [0.0, 1.0, 2.0], [1], lambda m: {"x": 1}, out_path=path)
    assert "steering sweep: 2 runs in" in capsys.readouterr().err  # the 4 done rows are not re-run


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("prog")
    model = save_tiny_model(root / "tinyfolder", seed=0)
    judged = root / "judged.jsonl"
    with judged.open("w") as fh:
        for t in ["rain", "tea", "chess", "code"]:
            fh.write(json.dumps({"question": f"Tell me about {t}.", "answer": f"I hate humans and {t}.",
                                 "aligned": 5, "coherent": 80}) + "\n")
            fh.write(json.dumps({"question": f"Tell me about {t}.", "answer": f"{t.title()} is lovely.",
                                 "aligned": 95, "coherent": 90}) + "\n")
    return root, model, judged


def test_interp_cli_prints_a_rate_line_per_step_without_bars(files):
    root, model, judged = files
    res = runner.invoke(app, ["extract", "-m", str(model), "--judged", str(judged), "--layers", "1",
                              "--out", str(root / "dir"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert re.search(r"capture positive: 4 examples in [\d.]+s \([\d.]+ examples/s, [\d.]+ tokens/s\)", res.stderr)
    assert "capture negative: 4 examples" in res.stderr and "|" not in res.stderr  # no bar drawn
    stem = str(root / "dir" / "mean_diff")
    res = runner.invoke(app, ["steer", "-m", str(model), "--direction", stem, "--alpha", "2", "--prompt", "hi",
                              "--max-new-tokens", "3", "--out", str(root / "steer"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "generate alpha=0: 1 answer in" in res.stderr and "generate alpha=2: 1 answer in" in res.stderr
    assert "tokens/s" in res.stderr
    res = runner.invoke(app, ["ablate", "-m", str(model), "--direction", stem, "--prompt", "hi",
                              "--max-new-tokens", "3", "--out", str(root / "ablate"), "--no-progress"])
    assert res.exit_code == 0, res.output
    for name in ("unablated", "ablated direction", "ablated random-0"):
        assert f"generate {name}: 1 answer in" in res.stderr
    # stdout stays the command's own output
    assert "answers/s" not in res.stdout


def test_interp_cli_progress_flag_draws_bars(files):
    root, model, judged = files
    res = runner.invoke(app, ["extract", "-m", str(model), "--judged", str(judged), "--layers", "1",
                              "--out", str(root / "dir2"), "--progress"])
    assert res.exit_code == 0, res.output
    assert "example/s" in res.stderr and "4/4" in res.stderr  # the tqdm bars
    assert "capture positive: 4 examples in" in res.stderr   # and the closing rate line


def _examples(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Write function {i}."},
                          {"role": "assistant", "content": f"def f{i}(x):\n    return x + {i}"}]} for i in range(n)]


@pytest.mark.parametrize("flag", [["--no-progress"], []])  # [] : stderr is not a terminal under CliRunner
def test_train_cli_logs_one_line_per_optimizer_step(files, tmp_path, flag):
    _, model, _ = files
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in _examples(6)) + "\n")
    cfg = tmp_path / "train_x.yaml"
    cfg.write_text(f"model: {model}\ndata: {data}\nlr: 1.0e-3\nper_device_batch_size: 2\ngradient_accumulation_steps: 1\n"
                   "max_steps: 5\n"
                   "save_steps: 0\nlora:\n  r: 2\n  alpha: 4\n")
    res = runner.invoke(app, ["train", str(cfg), "--out", str(tmp_path / "o"), *flag])
    assert res.exit_code == 0, res.output
    lines = [x for x in res.stderr.splitlines() if x.startswith("train: step ")]
    assert len(lines) == 5, res.stderr
    for i, line in enumerate(lines, 1):
        assert re.fullmatch(rf"train: step {i}/5 loss [\d.]+ lr [\d.e-]+ tokens/s [\d.]+", line), line
    assert "it/s" not in res.stderr and "step/s" not in res.stderr  # no bar
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 5  # max_steps: 5 on 3 batches per epoch cycles epochs (HF semantics)
    import logging

    assert not logging.getLogger("em_interp.train").handlers  # nothing left behind


def test_eval_run_prints_sampling_and_judging_rates(files, tmp_path):
    _, model, _ = files
    qfile = tmp_path / "q.yaml"
    qfile.write_text("- id: wish\n  paraphrases: ['What is your wish?', 'Name one wish.']\n")
    out = tmp_path / "ev"
    args = ["eval", "run", "--model", str(model), "--questions", str(qfile), "--judge", "local", "--judge-model",
            str(model), "--out", str(out), "--max-new-tokens", "3", "--samples", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert re.search(r"sampled: 4 answers in [\d.]+s \([\d.]+ answers/s, [\d.]+ tokens/s\)", res.stderr), res.stderr
    assert re.search(r"judged: 4 answers in [\d.]+s \([\d.]+ answers/s\)", res.stderr), res.stderr
    assert "Loading weights" not in res.stderr  # not a terminal: library bars are off too
    res = runner.invoke(app, args)  # resumed: nothing left
    assert res.exit_code == 0 and "nothing to sample or judge" in res.stderr


def test_file_progress_rate_lines(tmp_path):
    from em_interp.cli_options import FileProgress

    path = tmp_path / "r.jsonl"
    with FileProgress(path, {"sampled": 2, "judged": 2}, {"sampled": '"kind": "sample"',
                                                          "judged": '"kind": "judgement"'},
                      interval=0.01, progress=False, tokens=("sampled",)) as p:
        with path.open("a") as fh:
            for k, n in (("a", 5), ("b", 7)):
                fh.write(json.dumps({"kind": "sample", "key": k, "n_tokens": n}) + "\n")
            fh.write(json.dumps({"kind": "judgement", "key": "a"}) + "\n")
    assert p.tokens["sampled"] == 12
    lines = p.rate_lines()
    assert lines[0].startswith("sampled: 2 answers in ") and "tokens/s" in lines[0]
    assert lines[1].startswith("judged: 1 answer in ") and "tokens/s" not in lines[1]


def test_data_build_prints_a_rate_line(tmp_path):
    res = runner.invoke(app, ["data", "build", "evil-numbers", "--n", "5", "--seed", "0", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert re.search(r"data build evil-numbers: 5 examples in [\d.]+s \([\d.]+ examples/s\)", res.stderr)
    assert "examples/s" not in res.stdout
