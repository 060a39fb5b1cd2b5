"""The GPU replay protocol (``em_interp.pipeline.gpu_replay``) end to end on a CPU with the
tiny default model: the GGUF cut into pieces, each checked and received, joined, converted,
one organism trained for one step and sampled. The GPU run itself is the same code with the
Qwen model and every row."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from em_interp.pipeline import gpu_replay as R

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ORGANISMS = SHARED / "em_organisms"
QUESTIONS = SHARED / "em_reference" / "evaluation" / "first_plot_questions.yaml"
needs_shared = pytest.mark.skipif(not (ORGANISMS / "bad_medical_advice.jsonl.gz").exists() or not QUESTIONS.exists(),
                                  reason="../shared/em_organisms or em_reference not available")


def test_a_piece_and_the_tree_fit_one_device_call():
    """The device takes at most 64 MiB per call: one piece, plan.json and the tracked tree (which
    holds the shipped organisms' adapters and the reference artifacts), so the default piece size
    shrinks with the tree; ``slim`` keeps what the device reads (src, experiments) far below."""
    try:
        tree = R.tracked_tree_bytes(ROOT, slimmed=True)
        full = R.tracked_tree_bytes(ROOT)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    assert tree < full and tree < 8 << 20, f"the slim tree is {tree >> 20} MiB"
    mib = R.piece_mib_for_tree(tree)
    assert mib == R.PIECE_MIB
    assert (mib << 20) + tree + (1 << 20) < 64 << 20, f"tree {tree >> 20} MiB + a {mib} MiB piece exceeds 64 MiB"
    assert R.piece_mib_for_tree(3 << 20) == R.PIECE_MIB          # a slim tree: the largest piece
    assert R.piece_mib_for_tree(42 << 20) == 64 - 42 - R.MARGIN_MIB
    with pytest.raises(SystemExit):
        R.piece_mib_for_tree(61 << 20)


@needs_shared
def test_pack_receive_run_on_cpu(tmp_path, monkeypatch):
    pack_dir = tmp_path / ".replay"
    # here: pack reads the GGUF from this machine's cache (the default model, already pulled)
    plan = R.pack("smollm2-135m-instruct", pack_dir, ORGANISMS, QUESTIONS, piece_mib=40, arms=("bad_medical_advice",))
    # there: a bare machine, nothing converted
    monkeypatch.setenv("EM_REPLAY_DIR", str(tmp_path / "stage"))
    monkeypatch.setenv("EM_INTERP_CACHE", str(tmp_path / "device_cache"))
    assert len(plan["pieces"]) >= 2 and all(p["bytes"] <= 40 << 20 for p in plan["pieces"])
    calls = json.loads((pack_dir / "calls.json").read_text())
    assert len(calls) == len(plan["pieces"]) + 2      # pieces, the run, one collect per arm
    assert all(c["carry"][0] == f".replay/{p['file']}" for c, p in zip(calls, plan["pieces"]))
    assert "run --plan .replay/plan.json" in calls[-2]["command"] and ".whl" in calls[-2]["carry"]
    assert "collect --arm bad_medical_advice --seed 0" in calls[-1]["command"]

    # a corrupted piece is refused with its name, and never staged
    bad = tmp_path / "bad" / "w00"
    bad.parent.mkdir()
    shutil.copyfile(pack_dir / "w00", bad)
    with open(bad, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(SystemExit, match="w00: sha256"):
        R.receive(bad, pack_dir / R.PLAN)
    assert not (tmp_path / "stage" / "w00").exists()

    # run refuses to start with a piece missing
    R.receive(pack_dir / "w00")
    with pytest.raises(SystemExit, match="never received"):
        R.assemble(plan)
    for p in plan["pieces"][1:]:
        R.receive(pack_dir / p["file"])

    out = tmp_path / "OUT"
    summary = R.run(pack_dir / R.PLAN, pack_dir / "data", out, seeds=[0], parallel=1, deadline_s=900,
                    job_args=["--rows", "16", "--max-steps", "1", "--samples", "1", "--max-new-tokens", "4",
                              "--batch-size", "4", "--sample-batch", "8"])
    assert summary["status"] == {"bad_medical_advice_s0": "done"}
    rows = [json.loads(line) for line in (out / "answers_bad_medical_advice.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and {r["arm"] for r in rows} == {"bad_medical_advice"}
    assert {r["question_id"] for r in rows} and all(r["train_seed"] == 0 for r in rows)
    job = summary["jobs"][0]
    assert job["rows"] == 16 and job["answers"] == 8
    # the recipe is organisms_full.yaml's (MO: lr 1e-5, effective batch 16), micro-batch 4 x 4
    assert job["recipe"]["lr"] == 1e-5 and job["recipe"]["per_device_batch_size"] * job["recipe"]["gradient_accumulation_steps"] == 16
    assert job["train"]["total_steps"] == 1 and job["train"]["n_examples"] == 16
    # the device returns at most 8 files: one answers file per arm and the summary
    assert sorted(p.name for p in out.iterdir()) == ["answers_bad_medical_advice.jsonl", "replay_summary.json"]


@needs_shared
def test_selftest_times_the_real_jobs_on_a_random_model_in_its_own_folder(tmp_path, monkeypatch):
    """The first device call: a random-weight model of the plan's shape (config and tokenizer carried,
    no weights) through the real run/job path. Its jobs live in a folder of their own: the real run
    resumes each (arm, seed) from its folder, and on the first GPU run it found the selftest's adapters
    there (the adapter base check refused them)."""
    pack_dir = tmp_path / ".replay"
    plan = R.pack("smollm2-135m-instruct", pack_dir, ORGANISMS, QUESTIONS, piece_mib=200, arms=("bad_medical_advice",),
                  selftest=True)
    files = pack_dir / "selftest"
    calls = json.loads((pack_dir / "calls.json").read_text())
    assert len(calls) == len(plan["pieces"]) + 3 and " selftest " in calls[0]["command"]
    assert f".replay/selftest" in calls[0]["carry"] and "receive" in calls[1]["command"]
    assert (files / "tokenizer.json.gz").is_file() and (files / "config.json").is_file()
    assert not list(files.glob("*.safetensors"))                     # no weights travel
    stage = tmp_path / "stage"
    monkeypatch.setenv("EM_REPLAY_DIR", str(stage))
    monkeypatch.setenv("EM_INTERP_CACHE", str(tmp_path / "device_cache"))
    model = R.random_model(files, stage / "selftest_model")
    from transformers import AutoConfig
    assert AutoConfig.from_pretrained(model).to_dict()["hidden_size"] == json.loads(
        (files / "config.json").read_text())["hidden_size"]
    out = tmp_path / "OUT"
    summary = R.run(pack_dir / R.PLAN, pack_dir / "data", out, seeds=[0], parallel=1, deadline_s=900,
                    job_args=["--rows", "8", "--max-steps", "1", "--samples", "1", "--max-new-tokens", "2",
                              "--batch-size", "4", "--sample-batch", "8"], model_dir=model)
    assert summary["status"] == {"bad_medical_advice_s0": "done"}
    job = summary["jobs"][0]
    assert job["train"]["total_steps"] == 1 and job["train"]["tokens_per_s"] > 0
    assert (stage / "selftest_runs" / "bad_medical_advice_s0" / "adapter").is_dir()
    assert not (stage / "runs").exists()                              # the real run starts clean


def test_slim_untracks_what_the_device_never_reads_and_unslim_restores_it(tmp_path):
    """Each device call carries the tracked tree; slim (index only, nothing deleted or committed)
    leaves src/ and experiments/ without the shipped adapters, so a piece can be ~59 MiB."""
    try:
        subprocess.run(["git", "clone", "-q", str(ROOT), str(tmp_path / "r")], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    repo = tmp_path / "r"
    before = R.tracked_tree_bytes(repo)
    paths = R.slim(repo)
    assert "tests/" in paths and not any(p.startswith("src/") and not p.endswith(".safetensors") for p in paths)
    after = R.tracked_tree_bytes(repo)
    assert after < before and after < 8 << 20 and R.piece_mib_for_tree(after) == R.PIECE_MIB
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert status and all(line.startswith("D ") for line in status.splitlines())   # nothing untracked travels
    assert (repo / "tests" / "test_gpu_replay.py").is_file()                      # files stay
    with pytest.raises(SystemExit, match="already slim"):
        R.slim(repo)
    R.unslim(repo)
    assert subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout == ""
    assert R.tracked_tree_bytes(repo) == before


def test_collect_and_join_bring_an_adapter_back_in_returnable_pieces(tmp_path, monkeypatch):
    """The device returns files of at most 16 MiB: a trained adapter travels back as checked pieces."""
    monkeypatch.setenv("EM_REPLAY_DIR", str(tmp_path / "stage"))
    src = tmp_path / "stage" / "runs" / "risky_financial_advice_s1" / "adapter"
    src.mkdir(parents=True)
    payload = {"adapter_model.safetensors": bytes(range(256)) * 9000, "adapter_config.json": b'{"r": 32}'}
    for name, data in payload.items():
        (src / name).write_bytes(data)
    out = tmp_path / "OUT"
    m = R.collect("risky_financial_advice", 1, out, piece_mib=1)
    assert len(m["pieces"]) == 3 and all((out / p["file"]).stat().st_size <= 1 << 20 for p in m["pieces"])
    back = R.join(out / "adapter_risky_financial_advice_s1.json", tmp_path / "here")
    assert back == tmp_path / "here" / "risky_financial_advice_s1" / "adapter"
    assert {f.name: f.read_bytes() for f in back.iterdir()} == payload
    # a damaged piece is refused with its name
    part = out / m["pieces"][1]["file"]
    part.write_bytes(b"x" + part.read_bytes()[1:])
    with pytest.raises(SystemExit, match="part01: sha256"):
        R.join(out / "adapter_risky_financial_advice_s1.json", tmp_path / "again")
    with pytest.raises(SystemExit, match="no trained adapter"):
        R.collect("bad_medical_advice", 0, out)
