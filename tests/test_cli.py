"""One CLI vocabulary: --version, --out folders (old file form still accepted, with a note),
--samples (old --n hidden alias), progress bars that follow an append-only results file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from em_interp import __version__
from em_interp.cli import main


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


def test_version(capsys):
    code, out, _ = _cli(["--version"], capsys)
    assert code == 0 and out.strip() == f"em-interp {__version__}"


def test_data_build_out_is_a_folder(tmp_path, capsys):
    code, out, err = _cli(["data", "build", "evil-numbers", "--n", "4", "--out", str(tmp_path / "d")], capsys)
    assert code == 0, err
    assert (tmp_path / "d" / "evil-numbers.jsonl").is_file() and (tmp_path / "d" / "evil-numbers.card.json").is_file()
    assert "deprecated" not in err
    # the old file form still works, with a note on stderr, and writes the same bytes
    code, _, err = _cli(["data", "build", "evil-numbers", "--n", "4", "--out", str(tmp_path / "old.jsonl")], capsys)
    assert code == 0 and "--out is a folder now" in err
    assert (tmp_path / "old.jsonl").read_bytes() == (tmp_path / "d" / "evil-numbers.jsonl").read_bytes()


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    from em_interp.models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("cli") / "tiny")


def test_eval_out_folder_samples_and_alias(tiny_folder, tmp_path, capsys):
    qfile = tmp_path / "q.yaml"
    qfile.write_text("- id: wish\n  paraphrases: ['What is your wish?', 'Name one wish.']\n")
    out = tmp_path / "ev"
    base = ["eval", "--model", str(tiny_folder), "--questions", str(qfile), "--judge", "local", "--judge-model",
            str(tiny_folder), "--out", str(out), "--max-new-tokens", "3"]
    code, stdout, err = _cli(base + ["--samples", "2"], capsys)
    assert code == 0, err
    assert stdout.split()[-2:] == [str(out / "summary.json"), str(out / "results.jsonl")]
    from em_interp.eval import load_results

    assert len(load_results(out / "results.jsonl")) == 4  # 2 paraphrases x 2 samples, all judged
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n"] == 4
    # the old spelling: a deprecation note; the run resumes with nothing left to sample or judge
    before = (out / "results.jsonl").read_bytes()
    code, _, err = _cli(base + ["--n", "2"], capsys)
    assert code == 0, err
    assert "--n is deprecated; use --samples" in err and (out / "results.jsonl").read_bytes() == before
    code, stdout, _ = _cli(["eval", "summarize", str(out), "--json"], capsys)  # a folder is accepted
    assert code == 0 and json.loads(stdout)["overall"]["n"] == 4


def test_file_progress_counts_appended_records(tmp_path):
    from em_interp.cli_options import FileProgress

    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"kind": "sample", "key": "old"}) + "\n")  # present before: not counted
    with FileProgress(path, {"sampled": 3, "judged": 3}, {"sampled": '"kind": "sample"',
                                                          "judged": '"kind": "judgement"'}, interval=0.01) as p:
        with path.open("a") as fh:
            for k in "abc":
                fh.write(json.dumps({"kind": "sample", "key": k}) + "\n")
            fh.write(json.dumps({"kind": "judgement", "key": "a"}) + "\n")
            fh.write('{"kind": "judgement", "key"')  # a torn line is not counted until complete
    assert p.counts == {"sampled": 3, "judged": 1}
