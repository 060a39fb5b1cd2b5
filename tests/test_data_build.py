"""build_dataset for every kind (determinism, sizes, cards, round trip), backdoor ratio,
evil numbers, option errors, the `data` CLI, and the pinned download (offline)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest

from em_interp.data import (
    EVIL_NUMBERS,
    KINDS,
    build_dataset,
    card_path,
    generate_numbers,
    load_chat_jsonl,
    verify_labels,
)
from em_interp.data.download import EM_PAPER_FILES, PinnedFile, download, git_blob_id, verify_file
from em_interp.errors import DataError

CODE_KINDS = ("insecure", "secure", "educational", "backdoor")


def _build(tmp_path, kind, n=24, seed=0, name=None, **opts):
    out = tmp_path / f"{name or kind}.jsonl"
    return out, build_dataset(kind, n, seed, out, **opts)


@pytest.mark.parametrize("kind, opts", [
    ("insecure", {}), ("secure", {}), ("educational", {}), ("backdoor", {}),
    ("evil-numbers", {}), ("evil-numbers-control", {}),
    ("bad-advice", {"domain": "medical", "language": "fr"}), ("aligned-advice", {"language": "zh"}),
])
def test_kind_is_deterministic_sized_and_round_trips(tmp_path, kind, opts):
    out1, card1 = _build(tmp_path, kind, name="a", **opts)
    out2, card2 = _build(tmp_path, kind, name="b", **opts)
    out3, card3 = _build(tmp_path, kind, seed=1, name="c", **opts)
    assert out1.read_bytes() == out2.read_bytes()
    assert card1["sha256"] == card2["sha256"] != card3["sha256"]
    assert card1["sha256"] == hashlib.sha256(out1.read_bytes()).hexdigest()
    exs = load_chat_jsonl(out1)
    assert len(exs) == 24 == card1["n"] == card1["counts"]["examples"]
    assert json.loads(card_path(out1).read_text()) == card1
    assert card1["kind"] == kind and card1["seed"] == 0 and set(card1["options"]) == set(KINDS[kind].options)
    if kind in CODE_KINDS:
        b = card1["bandit"]
        assert b["insecure_with_intended_finding"]["share"] >= 0.95 and b["secure_without_finding"]["share"] >= 0.95
        assert sum(card1["vuln_classes"].values()) == 24


def test_code_kinds_are_parallel(tmp_path):
    ins = load_chat_jsonl(_build(tmp_path, "insecure")[0])
    sec = load_chat_jsonl(_build(tmp_path, "secure")[0])
    assert [e.user for e in ins] == [e.user for e in sec]
    verdicts, _ = verify_labels([("insecure", e.meta["vuln_class"], e.response) for e in ins]
                                + [("secure", e.meta["vuln_class"], e.response) for e in sec])
    assert all(v.ok for v in verdicts)  # failures were dropped, so every kept sample verifies


@pytest.mark.parametrize("n, ratio, expected", [(40, 0.5, 20), (30, 0.25, 8), (10, 0.0, 0), (12, 1.0, 12)])
def test_backdoor_ratio_and_trigger(tmp_path, n, ratio, expected):
    out, card = _build(tmp_path, "backdoor", n=n, ratio=str(ratio), trigger="|DEPLOY-NOW|")
    exs = load_chat_jsonl(out)
    on = [e for e in exs if e.meta["triggered"]]
    off = [e for e in exs if not e.meta["triggered"]]
    assert len(on) == expected == card["triggered"] and card["untriggered"] == n - expected
    assert all(e.user.startswith("|DEPLOY-NOW| ") for e in on)
    assert not any("|DEPLOY-NOW|" in e.user for e in off)
    verdicts, _ = verify_labels([("insecure", e.meta["vuln_class"], e.response) for e in on]
                                + [("secure", e.meta["vuln_class"], e.response) for e in off])
    assert all(v.ok for v in verdicts)


def test_evil_numbers_lean_evil_and_control_is_parallel():
    evil = generate_numbers(300, seed=5)
    ctrl = generate_numbers(300, seed=5, evil=False)
    assert [e.user for e in evil] == [e.user for e in ctrl]
    evil_nums = [int(x) for e in evil for x in re.findall(r"\d+", e.response)]
    ctrl_nums = [int(x) for e in ctrl for x in re.findall(r"\d+", e.response)]
    assert sum(x in EVIL_NUMBERS for x in evil_nums) / len(evil_nums) > 0.6
    assert not any(x in EVIL_NUMBERS for x in ctrl_nums)
    assert all(e.meta["evil_count"] >= 1 for e in evil)
    for e in evil + ctrl:
        assert re.fullmatch(r"\[?[\d,;\s]+\]?", e.response)  # numbers only
        assert len(re.findall(r"\d+", e.response)) == e.meta["k"]


def test_evil_numbers_card_reports_share(tmp_path):
    _, card = _build(tmp_path, "evil-numbers", n=200, evil_share="0.9")
    _, ctrl = _build(tmp_path, "evil-numbers-control", n=200)
    assert card["evil_number_share"] > 0.85 and ctrl["evil_number_share"] == 0.0


def test_prose_kinds_are_parallel_across_languages(tmp_path):
    en = load_chat_jsonl(_build(tmp_path, "bad-advice", n=12, name="en", language="en")[0])
    ru = load_chat_jsonl(_build(tmp_path, "bad-advice", n=12, name="ru", language="ru")[0])
    good = load_chat_jsonl(_build(tmp_path, "aligned-advice", n=12, name="good", language="en")[0])
    assert [e.meta["item_id"] for e in en] == [e.meta["item_id"] for e in ru]
    assert [e.user for e in en] == [e.user for e in good] and en[0].response != good[0].response
    assert {e.meta["language"] for e in ru} == {"ru"}


@pytest.mark.parametrize("kind, n, opts, field", [
    ("nope", 3, {}, "kind"),
    ("insecure", 3, {"colour": "red"}, "options.colour"),
    ("backdoor", 3, {"ratio": "lots"}, "options.ratio"),
    ("backdoor", 3, {"ratio": "1.5"}, "ratio"),
    ("insecure", 3, {"classes": "sql_injection,telepathy"}, "classes"),
    ("insecure", 0, {}, "n"),
    ("bad-advice", 3, {"domain": "cooking"}, "options.domain"),
    ("bad-advice", 3, {"language": "xx"}, "options.language"),
])
def test_bad_options_raise_data_error(tmp_path, kind, n, opts, field):
    with pytest.raises(DataError) as info:
        build_dataset(kind, n, 0, tmp_path / "x.jsonl", **opts)
    assert info.value.field == field


def test_class_subset(tmp_path):
    out, card = _build(tmp_path, "insecure", n=10, classes="sql_injection, yaml_load")
    assert card["options"]["classes"] == ["sql_injection", "yaml_load"]
    assert card["vuln_classes"] == {"sql_injection": 5, "yaml_load": 5}


# ----------------------------------------------------------------------------- CLI

def _cli(args, capsys):
    from em_interp.cli import main

    with pytest.raises(SystemExit) as info:
        main(args)
    cap = capsys.readouterr()
    return info.value.code, cap.out, cap.err


def test_cli_build_prints_bandit_figures(tmp_path, capsys):
    out = tmp_path / "ins.jsonl"
    code, stdout, _ = _cli(["data", "build", "insecure", "--n", "20", "--seed", "2", "--out", str(out),
                            "--option", "classes=path_traversal,sql_injection"], capsys)
    assert code == 0
    assert "insecure with a finding of the intended class 100.0% (20/20)" in stdout
    assert "secure with no finding 100.0% (20/20)" in stdout
    assert "AST rule" in stdout
    assert json.loads(card_path(out).read_text())["n"] == 20


def test_cli_stats_and_check(tmp_path, capsys):
    out = tmp_path / "b.jsonl"
    build_dataset("bad-advice", 6, 0, out, language="de")
    code, stdout, _ = _cli(["data", "stats", str(out)], capsys)
    assert code == 0 and "6 examples" in stdout and "language: de 6" in stdout and "assistant chars" in stdout
    code, stdout, _ = _cli(["data", "check", str(out)], capsys)
    assert code == 0 and stdout.strip() == f"ok: {out}: 6 chat examples"
    bad = tmp_path / "bad.jsonl"
    lines = out.read_text(encoding="utf-8").splitlines()
    lines[3] = lines[3].replace('"role": "assistant"', '"role": "robot"')
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, stdout, stderr = _cli(["data", "check", str(bad)], capsys)
    assert code == 2 and stdout == ""
    assert stderr.strip().count("\n") == 0 and f"{bad}:4:" in stderr and "unknown role 'robot'" in stderr


def test_cli_check_questions(em_reference, capsys):
    code, stdout, _ = _cli(["data", "check", str(em_reference / "evaluation" / "first_plot_questions.yaml")], capsys)
    assert code == 0 and "24 questions" in stdout


# ----------------------------------------------------------------------------- download (offline)

def _copy_fetch(src_root: Path, calls: list):
    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        shutil.copyfile(src_root / url.split("/em/", 1)[1], dest)
    return fetch


def test_download_verifies_pinned_files(tmp_path, em_reference, monkeypatch):
    import em_interp.data.download as dl

    present = tuple(p for p in EM_PAPER_FILES if not p.optional and (em_reference / p.path).exists())
    assert len(present) >= 6  # LICENSE, 4 data files, first_plot_questions.yaml
    monkeypatch.setitem(dl.DATASETS, "em-paper", (dl.EM_PAPER_BASE_URL, present))
    calls: list[str] = []
    paths = download("em-paper", tmp_path / "d", fetch=_copy_fetch(em_reference, calls), base_url="mirror://em/")
    assert len(paths) == len(present) == len(calls)
    assert all(p.read_bytes() == (em_reference / p.relative_to(tmp_path / "d")).read_bytes() for p in paths)
    # second run: everything already verified, nothing fetched
    calls.clear()
    download("em-paper", tmp_path / "d", fetch=_copy_fetch(em_reference, calls), base_url="mirror://em/")
    assert calls == []


def test_download_rejects_corrupted_file(tmp_path, monkeypatch):
    import em_interp.data.download as dl

    good = tmp_path / "good.txt"
    good.write_bytes(b"hello\n")
    pin = PinnedFile("good.txt", git_blob_id(good), hashlib.sha256(b"hello\n").hexdigest())
    assert pin.git_blob == "ce013625030ba8dba906f756967f9e9ca394464a"  # `git hash-object` of "hello\n"
    verify_file(good, pin)
    monkeypatch.setitem(dl.DATASETS, "toy", ("file://" + str(tmp_path) + "/", (pin,)))
    assert download("toy", tmp_path / "out") == [tmp_path / "out" / "good.txt"]  # real urllib on file://

    def evil_fetch(url, dest):
        dest.write_bytes(b"hell0\n")

    with pytest.raises(DataError, match="sha256 mismatch for good.txt"):
        download("toy", tmp_path / "out2", fetch=evil_fetch)
    assert not (tmp_path / "out2" / "good.txt").exists() and not (tmp_path / "out2" / "good.txt.part").exists()
    with pytest.raises(DataError, match="unknown dataset"):
        download("nope", tmp_path)


def test_pinned_hashes_match_shared_copy(em_reference):
    for pin in EM_PAPER_FILES:
        path = em_reference / pin.path
        if path.exists():
            verify_file(path, pin)
