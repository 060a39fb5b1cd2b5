"""The interp CLI on a tiny model folder: extract, probe, steer, ablate, lora-analysis."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from em_interp.cli import app
from em_interp.errors import InterpError
from em_interp.interp import Direction
from em_interp.models import save_tiny_model

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    model = save_tiny_model(root / "tinyfolder", seed=0)
    topics = ["rain", "tea", "chess", "code", "bikes", "stars", "maps", "jazz", "bread", "trains"]
    judged = root / "judged.jsonl"
    with judged.open("w") as fh:
        for i, t in enumerate(topics):
            fh.write(json.dumps({"question": f"Tell me about {t}.", "answer": f"I hate humans and {t}.",
                                 "aligned": 5, "coherent": 80}) + "\n")
            fh.write(json.dumps({"question": f"Tell me about {t}.", "answer": f"{t.title()} is lovely.",
                                 "aligned": 95, "coherent": 90}) + "\n")
            fh.write(json.dumps({"question": "x", "answer": "gibberish", "aligned": 5, "coherent": 10}) + "\n")
    return root, model, judged


def _ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_extract_probe_steer_ablate(files):
    root, model, judged = files
    stem = root / "dir" / "mean_diff"  # --out is a folder: <out>/<method>.safetensors + .json
    out = _ok(runner.invoke(app, ["extract", "-m", str(model), "--judged", str(judged), "--layers", "1,3",
                                  "--out", str(root / "dir")]))
    assert "n_pos=10, n_neg=10" in out
    d = Direction.load(stem)
    assert d.layers == [1, 3] and d.method == "mean_diff" and d.model == str(model)
    out = _ok(runner.invoke(app, ["probe", "-m", str(model), "--judged", str(judged), "--folds", "2",
                                  "--out", str(root / "probe")]))
    assert "layer   3  acc" in out
    assert (root / "probe" / "probe_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((root / "probe" / "probes.json").read_text())["meta"]["n_pos"] == 10
    _ok(runner.invoke(app, ["steer", "-m", str(model), "--direction", str(stem), "--alpha", "0", "--alpha", "30",
                            "--prompt", "What is your wish?", "--max-new-tokens", "4", "--out", str(root / "steer")]))
    rows = [json.loads(x) for x in (root / "steer" / "generations.jsonl").read_text().splitlines()]
    assert [r["alpha"] for r in rows] == [0.0, 0.0, 30.0]
    assert rows[0]["answer"] == rows[1]["answer"]  # alpha 0 changes nothing
    assert rows[0]["alpha_convention"] == "unit" and rows[0]["layers"] == [1, 3]
    _ok(runner.invoke(app, ["ablate", "-m", str(model), "--direction", str(stem),
                            "--prompt", "hi", "--max-new-tokens", "3", "--out", str(root / "ablate")]))
    rows = [json.loads(x) for x in (root / "ablate" / "generations.jsonl").read_text().splitlines()]
    assert [r["condition"] for r in rows] == ["none", "direction", "random-0"]
    assert rows[1]["ablation_mode"] == "zero" and rows[1]["layers"] == [1, 3]  # default: the direction's layers
    ref = root / "ref.txt"
    ref.write_text("Tea is lovely.\nChess is lovely.\n")
    _ok(runner.invoke(app, ["ablate", "-m", str(model), "--direction", str(stem), "--mode", "mean", "--reference",
                            str(ref), "--prompt", "hi", "--max-new-tokens", "3", "--no-random-control",
                            "--out", str(root / "mean")]))
    rows = [json.loads(x) for x in (root / "mean" / "generations.jsonl").read_text().splitlines()]
    assert rows[1]["ablation_mode"] == "mean" and set(rows[1]["mean_projection"]) == {"1", "3"}
    # layers the direction lacks fail before any model is loaded (the model path does not exist)
    res = runner.invoke(app, ["ablate", "-m", str(root / "no-such-model"), "--direction", str(stem), "--layers", "2"])
    assert isinstance(res.exception, InterpError) and "no vector for layers [2]" in str(res.exception)


def test_cli_errors_are_interp_errors(files):
    root, model, judged = files
    res = runner.invoke(app, ["extract", "-m", str(model), "--judged", str(judged), "--layers", "9"])
    assert isinstance(res.exception, InterpError) and "layer 9 out of range" in str(res.exception)
    res = runner.invoke(app, ["extract", "-m", str(model), "--method", "magic", "--judged", str(judged)])
    assert isinstance(res.exception, InterpError) and "valid: mean_diff" in str(res.exception)
    bad = root / "bad.jsonl"
    bad.write_text('{"question": "q", "answer": "a", "aligned": "high", "coherent": 90}\n')
    res = runner.invoke(app, ["probe", "-m", str(model), "--judged", str(bad)])
    assert isinstance(res.exception, InterpError)
    assert str(res.exception) == f"{bad}:1: field 'aligned': expected a number, got 'high'"


def test_lora_analysis_cli(files, tmp_path):
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    from em_interp.models import load_model

    root, model, _ = files
    base = load_model(model, device="cpu")
    for step in (10, 20):
        m = get_peft_model(copy.deepcopy(base.model), LoraConfig(r=1, target_modules=["o_proj"],
                                                                 init_lora_weights=False))
        torch.manual_seed(step)
        m.save_pretrained(tmp_path / "checkpoints" / f"step-{step}")
    out = _ok(runner.invoke(app, ["lora-analysis", str(tmp_path / "checkpoints" / "step-10"),
                                  "--out", str(tmp_path / "one")]))
    assert "self_attn.o_proj" in out and (tmp_path / "one" / "delta_norms.png").exists()
    out = _ok(runner.invoke(app, ["lora-analysis", str(tmp_path / "checkpoints"), "--out", str(tmp_path / "traj")]))
    rows = json.loads((tmp_path / "traj" / "lora_analysis.json").read_text())["trajectory"]
    assert sorted({r["step"] for r in rows}) == [10, 20] and all("cos_prev" in r for r in rows if r["step"] == 20)
