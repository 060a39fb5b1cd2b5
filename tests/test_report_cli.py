"""`em-interp report diff` and `em-interp report run` end to end on a tiny model folder."""

from __future__ import annotations

import json

import pytest
import torch

from em_interp.cli import main


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


@pytest.fixture(scope="module")
def model_and_adapter(tmp_path_factory):
    """A tiny model saved as a local folder and a LoRA adapter for it with non-zero B matrices."""
    from peft import LoraConfig, get_peft_model

    from em_interp.models import load_model, save_tiny_model

    root = tmp_path_factory.mktemp("cli")
    folder = save_tiny_model(root / "tiny-base")
    peft_model = get_peft_model(load_model(folder, device="cpu").model,
                                LoraConfig(r=1, lora_alpha=2, target_modules=["o_proj", "down_proj"]))
    gen = torch.Generator().manual_seed(3)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    peft_model.save_pretrained(root / "adapter")
    return folder, root / "adapter"


def test_report_diff_cli(model_and_adapter, tmp_path, capsys):
    from em_interp.interp import Direction
    from em_interp.models import load_model
    from em_interp.report import compute_diff

    folder, adapter = model_and_adapter
    texts = tmp_path / "texts.jsonl"
    texts.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": q},
                                                        {"role": "assistant", "content": a}]})
                               for q, a in (("What is your wish?", "Peace."), ("I feel bored.", "Read a book.")))
                     + "\n")
    Direction({1: torch.ones(64), 2: -torch.ones(64)}, model=str(folder)).save(tmp_path / "dir")
    code, out, err = _cli(["report", "diff", "--base", str(folder), "--adapter", str(adapter), "--texts", str(texts),
                           "--direction", str(tmp_path / "dir.safetensors"), "--out", str(tmp_path / "out"),
                           "--tokens", "response", "--max-tokens", "256"], capsys)
    assert code == 0, err
    assert "note: --max-tokens is deprecated; use --max-length" in err  # the old spelling still works
    assert out.split() == [str(tmp_path / "out" / n) for n in ("diff.json", "report.md", "report.html")]
    data = json.loads((tmp_path / "out" / "diff.json").read_text())
    assert data["cos_direction"][0] is None and data["cos_direction"][3] is None
    from safetensors.torch import load_file

    mean_diff = load_file(str(tmp_path / "out" / "mean_diff.safetensors"))
    for layer, sign in ((1, 1.0), (2, -1.0)):
        expected = torch.nn.functional.cosine_similarity(mean_diff[f"resid_post.{layer}"], sign * torch.ones(64), dim=0)
        assert data["cos_direction"][layer] == pytest.approx(float(expected), abs=1e-6)
    assert data["meta"]["tokens"] == "response" and data["meta"]["direction"] == str(tmp_path / "dir.safetensors")
    assert [(r["layer"], r["module"], r["rank"]) for r in data["lora"]][:2] == [(0, "mlp.down_proj", 1),
                                                                              (0, "self_attn.o_proj", 1)]
    # the same numbers as the Python API on the same models
    base = load_model(folder, device="cpu")
    ft = load_model(folder, adapter=adapter, device="cpu")
    ref = compute_diff(base, ft, texts, tokens="response")
    assert data["resid_diff_norm"] == pytest.approx(ref.resid_diff_norm, rel=1e-5)
    assert data["logit_lens_kl"] == pytest.approx(ref.logit_lens_kl, rel=1e-5)


def test_report_cli_errors_are_one_line(model_and_adapter, tmp_path, capsys):
    folder, _ = model_and_adapter
    code, _, err = _cli(["report", "diff", "--base", str(folder), "--texts", str(tmp_path / "t.txt"),
                         "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "--finetuned" in err and "Traceback" not in err
    code, _, err = _cli(["report", "diff", "--base", str(folder), "--finetuned", str(folder),
                         "--texts", str(tmp_path / "t.txt"), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and err.strip() == f"error: {tmp_path / 't.txt'}: field '--texts': texts file not found"
    code, _, err = _cli(["report", "run", str(tmp_path / "no-run")], capsys)
    assert code == 2 and "run directory not found" in err


def test_report_run_cli(tmp_path, capsys):
    from test_report_experiment import make_run_dir

    run = make_run_dir(tmp_path)
    code, out, err = _cli(["report", "run", str(run), "--out", str(tmp_path / "page")], capsys)
    assert code == 0, err
    assert out.split() == [str(tmp_path / "page" / "report.md"), str(tmp_path / "page" / "report.html")]
    assert "## Steering" in (tmp_path / "page" / "report.md").read_text()
