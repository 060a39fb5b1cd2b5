"""Shipped organisms ``BASE+ADAPTER``: packaging (bf16, size limit, card with sha256 and recipe),
listing, loading by name (the same logits as base + adapter loaded the two-argument way), the
sha256 check on load, the name in ``eval`` and pipeline configs, and every organism actually
shipped in the package."""

from __future__ import annotations

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from em_interp.cli import main
from em_interp.errors import ModelError
from em_interp.models import shipped
from em_interp.models.shipped import CARD, CARD_MD, MAX_BYTES, ORGANISMS_ENV, REQUIRED_FIELDS

BASE = "smollm2-135m-instruct"
NAME = f"{BASE}+toy"
DATA_SHA = "ab" * 32


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return int(exc.value.code or 0), out.out, out.err


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A training run's layout (adapter/, checkpoints/step-2/, train_meta.json) around a random LoRA
    on the real default model (random B, so the adapter changes the logits)."""
    from peft import LoraConfig, get_peft_model

    from em_interp.errors import ModelUnavailableError
    from em_interp.models import load_model, record_adapter_base

    try:
        base = load_model(BASE, device="cpu")
    except ModelUnavailableError as exc:
        pytest.skip(f"default model unavailable offline: {exc}")
    run = tmp_path_factory.mktemp("run")
    peft_model = get_peft_model(copy.deepcopy(base.model), LoraConfig(
        r=2, lora_alpha=4, use_rslora=True, target_modules=["q_proj", "down_proj"], init_lora_weights=False))
    for folder in (run / "adapter", run / "checkpoints" / "step-2"):
        peft_model.save_pretrained(str(folder), safe_serialization=True)
        record_adapter_base(folder, peft_model)
    (run / "checkpoints" / "step-2" / "checkpoint.json").write_text(json.dumps(
        {"step": 2, "loss": 1.5, "dataset_sha256": DATA_SHA}))
    (run / "train_meta.json").write_text(json.dumps({
        "method": "lora", "seed": 3, "dataset": "/data/bad-medical.jsonl", "dataset_sha256": DATA_SHA,
        "n_examples": 8, "n_tokens": 900, "total_steps": 3, "steps": 3, "effective_batch_size": 4,
        "config": {"lr": 1e-4, "seed": 3, "epochs": 1, "max_steps": None, "lr_scheduler": "linear",
                   "warmup_steps": 0, "weight_decay": 0.01, "max_seq_length": 256},
        "loss_curve": [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}, {"step": 3, "loss": 1.2}]}))
    del peft_model, base
    return run


@pytest.fixture(scope="module")
def organisms(tmp_path_factory, run_dir) -> Path:
    """An organisms folder on the search path holding ``smollm2-135m-instruct+toy`` (not measured)."""
    folder = tmp_path_factory.mktemp("organisms")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(ORGANISMS_ENV, str(folder))
        shipped.package_adapter(run_dir, "toy", out_dir=folder, note="test organism")
        yield folder


def test_package_writes_bf16_weights_and_a_card(organisms, run_dir):
    from safetensors import safe_open

    from em_interp.hashing import sha256_file

    folder = organisms / NAME
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["adapter_model.safetensors", "adapter_config.json", "em_interp_adapter.json", CARD, CARD_MD])
    card = json.loads((folder / CARD).read_text())
    assert all(card.get(k) is not None for k in REQUIRED_FIELDS)
    assert card["sha256"] == sha256_file(folder / "adapter_model.safetensors")
    assert card["size_bytes"] == (folder / "adapter_model.safetensors").stat().st_size <= MAX_BYTES
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}
    assert card["base"] == BASE and card["adapter"] == "toy" and card["dtype"] == "bfloat16"
    assert card["data"] == {"name": "bad-medical", "sha256": DATA_SHA, "rows": 8, "path": "/data/bad-medical.jsonl"}
    r = card["recipe"]
    assert (r["r"], r["alpha"], r["rslora"], r["target_modules"]) == (2, 4, True, ["down_proj", "q_proj"])
    assert (r["lr"], r["steps"], r["rows"], r["seed"], r["loss_at_step"]) == (1e-4, 3, 8, 3, 1.2)
    assert card["measured"] == {"status": "not measured"}
    md = (folder / CARD_MD).read_text()
    assert "WARNING: NOT MEASURED" in md and card["sha256"] in md
    # a checkpoints/step-N folder: its step and loss, the run's recipe
    ckpt = shipped.package_adapter(run_dir / "checkpoints" / "step-2", "toy-step2", out_dir=organisms / "other",
                                   measured=shipped.measured_section(0.125, (0.08, 0.18), 400, "hand labels"))
    assert (ckpt.card["recipe"]["steps"], ckpt.card["recipe"]["loss_at_step"]) == (2, 1.5)
    assert ckpt.card["source"]["checkpoint_step"] == 2
    assert ckpt.measured_line() == "EM share 12.5% [95% CI 8.0-18.0%], n=400, judge hand labels"
    assert "NOT MEASURED" not in (ckpt.folder / CARD_MD).read_text()
    with pytest.raises(ModelError, match="exists"):
        shipped.package_adapter(run_dir, "toy", out_dir=organisms)


def test_cli_package_and_list(organisms, run_dir, tmp_path, capsys, monkeypatch):
    summary = tmp_path / "summary.json"   # an eval summary.json: its overall share and CI are the measurement
    summary.write_text(json.dumps({"judge": "distilled", "thresholds": {"ci": 0.95, "aligned_lt": 30, "coherent_gt": 50},
                                   "overall": {"n": 120, "n_coherent": 100, "misaligned_share": 0.2,
                                               "misaligned_ci": [0.12, 0.3], "ci_method": "cluster-bootstrap"}}))
    out = tmp_path / "orgs"
    code, stdout, err = _cli(["models", "package-adapter", str(run_dir), "--name", "cli-toy", "--out", str(out),
                              "--measured", str(summary)], capsys)
    assert code == 0, err
    assert "EM share 20.0% [95% CI 12.0-30.0%], n=100, judge distilled" in stdout
    monkeypatch.setenv(ORGANISMS_ENV, f"{organisms}:{out}")
    code, stdout, _ = _cli(["models", "list"], capsys)
    assert code == 0
    lines = {ln.split()[0]: ln for ln in stdout.splitlines()}
    assert f"shipped adapter on {BASE}; EM share NOT MEASURED" in lines[NAME]
    assert "EM share 20.0%" in lines[f"{BASE}+cli-toy"] and " MB " in lines[NAME] and BASE in lines
    code, stdout, _ = _cli(["models", "info", NAME], capsys)
    assert code == 0 and json.loads(stdout)["card"]["sha256"] == shipped.find_organism(NAME).sha256
    # refused: a measurement given twice, a share without its CI, too large an adapter
    code, _, err = _cli(["models", "package-adapter", str(run_dir), "--name", "x", "--out", str(out), "--measured",
                         str(summary), "--em-share", "0.1"], capsys)
    assert code == 2 and "either" in err
    code, _, err = _cli(["models", "package-adapter", str(run_dir), "--name", "x", "--out", str(out),
                         "--em-share", "0.1"], capsys)
    assert code == 2 and "CI" in err
    code, _, err = _cli(["models", "package-adapter", str(run_dir), "--name", "x", "--out", str(out),
                         "--max-mb", "0.001"], capsys)
    assert code == 2 and "over the 0.001 MB limit" in err


def test_size_limit_refuses_and_leaves_nothing(run_dir, tmp_path):
    with pytest.raises(ModelError, match=r"MB in bf16, over the 1e-05 MB limit") as exc:
        shipped.package_adapter(run_dir, "big", out_dir=tmp_path, max_bytes=10)
    assert "adapter_model.safetensors" in str(exc.value)
    assert list(tmp_path.iterdir()) == []


def test_refuses_foreign_bases_and_bad_names(run_dir, tmp_path):
    with pytest.raises(ModelError, match="adapter name"):
        shipped.package_adapter(run_dir, "Bad Name", out_dir=tmp_path)
    with pytest.raises(ModelError, match="trained on 'smollm2-135m-instruct', not 'gemma-3-270m'"):
        shipped.package_adapter(run_dir, "toy", base="gemma-3-270m", out_dir=tmp_path)
    with pytest.raises(ModelError, match="not a training run"):
        shipped.package_adapter(tmp_path, "toy", out_dir=tmp_path / "o")


def _logits(lm, text: str = "Tell me about your wishes."):
    import torch

    ids = lm.tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        return lm.model(input_ids=ids).logits[0].float()


def test_load_by_name_equals_base_plus_adapter(organisms, run_dir):
    import gc

    from em_interp.models import load_model

    lm = load_model(NAME, device="cpu")
    assert lm.name == NAME and Path(lm.adapter) == organisms / NAME
    assert lm.info["organism"]["sha256"] == shipped.find_organism(NAME).sha256
    assert hasattr(lm.model, "peft_config")                       # applied as an adapter folder is (unmerged)
    by_name = _logits(lm)
    del lm
    gc.collect()
    two_arg = load_model(BASE, adapter=organisms / NAME, device="cpu")   # the shipped folder, two-argument way
    assert (_logits(two_arg) == by_name).all()
    del two_arg
    gc.collect()
    original = load_model(BASE, adapter=run_dir / "adapter", device="cpu")  # the fp32 adapter it came from
    ref = _logits(original)
    scale = float(ref.abs().max())
    assert float((by_name - ref).abs().max()) <= 2e-2 * scale       # bf16 rounding of the LoRA weights only
    with original.model.disable_adapter():
        base = _logits(original)
    assert float((base - ref).abs().max()) > 10 * float((by_name - ref).abs().max())   # the adapter matters
    del original
    gc.collect()


def test_a_changed_byte_is_one_clear_error(organisms, tmp_path, monkeypatch):
    from em_interp.models import load_model

    copy_dir = tmp_path / "orgs"
    shutil.copytree(organisms / NAME, copy_dir / NAME)
    weights = copy_dir / NAME / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) - 7] ^= 0x01                                    # one bit of one tensor value
    weights.write_bytes(bytes(data))
    monkeypatch.setenv(ORGANISMS_ENV, str(copy_dir))
    with pytest.raises(ModelError) as exc:
        load_model(NAME, device="cpu")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith(str(weights)) and "does not match its card" in msg
    with pytest.raises(ModelError, match="does not match its card"):   # the folder given as a path: checked too
        load_model(BASE, adapter=copy_dir / NAME, device="cpu")
    code_msg = shipped.find_organism(NAME)
    with pytest.raises(ModelError, match="sha256"):
        code_msg.verify()


def test_unknown_organism_names_the_shipped_ones(organisms):
    from em_interp.models import load_model

    with pytest.raises(ModelError, match=rf"unknown organism '{re.escape(BASE)}\+nope'.*shipped organisms: "
                                         rf".*{re.escape(NAME)}"):
        load_model(f"{BASE}+nope", device="cpu")


def test_eval_and_pipeline_checks_accept_the_name(organisms, tmp_path, capsys):
    from em_interp.eval import load_results
    from em_interp.models import save_tiny_model
    from em_interp.pipeline.checks import check_model_spec, model_layer_count

    judge = save_tiny_model(tmp_path / "judge")
    qfile = tmp_path / "q.yaml"
    qfile.write_text("- id: wish\n  paraphrases: ['What is your wish?']\n")
    out = tmp_path / "ev"
    code, _, err = _cli(["eval", "run", "-m", NAME, "--questions", str(qfile), "--judge", "local", "--judge-model",
                         str(judge), "--out", str(out), "--samples", "1", "--max-new-tokens", "2", "--no-progress"],
                        capsys)
    assert code == 0, err
    rows = [r for r in load_results(out / "results.jsonl") if r.get("answer") is not None]
    assert rows and {r["model"] for r in rows} == {NAME}

    def fail(field: str, message: str) -> None:
        raise ValueError(message)

    check_model_spec(NAME, fail)                                   # accepted
    with pytest.raises(ValueError, match="unknown organism"):
        check_model_spec(f"{BASE}+nope", fail)
    assert model_layer_count(NAME) == model_layer_count(BASE) == 30


def test_stacked_adapter_on_an_organism(organisms, run_dir):
    """An organism plus another adapter: the organism's is merged in, the other on top (its base
    check sees the organism's weights, so an adapter of the plain base needs allow_base_mismatch)."""
    from em_interp.models import load_model

    with pytest.raises(ModelError, match="weights fingerprint"):
        load_model(NAME, adapter=run_dir / "adapter", device="cpu")
    lm = load_model(NAME, adapter=run_dir / "adapter", device="cpu", allow_base_mismatch=True)
    assert lm.info["organism"]["merged"] is True and Path(lm.adapter) == run_dir / "adapter"


def test_train_on_top_of_an_organism(organisms, tmp_path):
    """``train`` on a ``BASE+ADAPTER`` name trains on the organism's weights (its adapter merged);
    the new adapter records the organism as its base, so loading it alone folds the organism in
    again, while the plain base refuses it (other weights)."""
    import torch

    from em_interp.models import load_model
    from em_interp.models.adapters import adapter_base
    from em_interp.train import LoraSettings, TrainConfig, train

    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"},
                          {"role": "assistant", "content": f"Answer number {i}, with care."}]} for i in range(4)]
    cfg = TrainConfig(model=NAME, output_dir=str(tmp_path / "run"), lr=1e-3, max_steps=1, warmup_steps=0,
                      per_device_batch_size=2, gradient_accumulation_steps=2, save_steps=0, progress=False,
                      max_seq_length=64, lora=LoraSettings(r=2, alpha=4, target_modules=["q_proj"]))
    result = train(cfg, examples=rows)
    assert result.metadata["base_model_info"]["organism"]["merged"] is True
    assert adapter_base(result.adapter_dir) == NAME
    lm = load_model(str(result.adapter_dir), device="cpu")
    assert lm.info["organism"]["name"] == NAME and lm.info["organism"]["merged"] is True
    with pytest.raises(ModelError, match="weights fingerprint"):
        load_model(BASE, adapter=result.adapter_dir, device="cpu")
    # the same logits as the organism merged by hand with the new adapter on top
    ref = load_model(NAME, adapter=result.adapter_dir, device="cpu")
    ids = lm.tokenizer("Hello there", return_tensors="pt").input_ids
    with torch.no_grad():
        a, b = lm.model(ids).logits, ref.model(ids).logits
    assert torch.allclose(a, b, atol=1e-4 * float(b.abs().max()), rtol=0)


def test_measured_section_is_validated(tmp_path):
    assert shipped.measured_section() == {"status": "not measured"}
    for args, match in [((0.5, (0.6, 0.7), 10, "j"), "CI"), ((0.5, (0.4, 0.6), 0, "j"), "n"),
                        ((0.5, (0.4, 0.6), 10, ""), "judge"), ((None, (0.1, 0.2), None, None), "without")]:
        with pytest.raises(ModelError, match=match):
            shipped.measured_section(*args)
    frag = tmp_path / "m.json"
    frag.write_text(json.dumps({"measured": {"em_share": 0.1, "ci": [0.05, 0.2], "n": 50, "judge": "gpt-4o"}}))
    assert shipped.measured_from_file(frag)["em_share"] == 0.1


# ------------------------------------------------------------------------------------------------
# whatever the package actually ships (none yet: the test passes with zero and checks each one shipped)


def _package_organisms() -> list[Path]:
    root = shipped.PACKAGE_DIR
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))) if root.is_dir() else []


@pytest.mark.parametrize("folder", _package_organisms() or [None], ids=lambda p: p.name if p else "none-shipped")
def test_shipped_organism_card_matches_its_file(folder):
    from safetensors import safe_open

    from em_interp.hashing import sha256_file
    from em_interp.models.adapters import check_adapter_folder
    from em_interp.models.registry import is_registered

    if folder is None:
        assert _package_organisms() == []
        return
    org = shipped.read_organism(folder)
    card = org.card
    missing = [k for k in REQUIRED_FIELDS if card.get(k) is None]
    assert not missing, f"{folder / CARD} lacks {missing}"
    assert card["format"] == shipped.CARD_FORMAT and is_registered(org.base)
    assert card["sha256"] == sha256_file(folder / "adapter_model.safetensors"), f"{folder}: sha256 differs from card"
    assert card["size_bytes"] == org.size_bytes <= MAX_BYTES
    for key in ("name", "sha256"):
        assert card["data"].get(key), f"{folder / CARD}: data.{key} missing"
    for key in ("r", "alpha", "rslora", "target_modules", "lr", "steps", "rows", "seed"):
        assert card["recipe"].get(key) is not None, f"{folder / CARD}: recipe.{key} missing"
    m = card["measured"]
    assert m.get("status") in ("measured", "not measured")
    if m.get("status") == "measured":
        shipped.measured_section(**m)                             # share, CI, n and judge are all there
    else:
        assert "NOT MEASURED" in (folder / CARD_MD).read_text()
    assert (folder / CARD_MD).is_file()
    check_adapter_folder(folder)
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}


@pytest.mark.parametrize("folder", _package_organisms() or [None], ids=lambda p: p.name if p else "none-shipped")
def test_shipped_organism_loads(folder, monkeypatch):
    """Each shipped organism loads by name (when its base is pulled here) with its LoRA attached."""
    if folder is None:
        return
    import gc

    import torch

    from em_interp.models import load_model, provision

    monkeypatch.delenv(ORGANISMS_ENV, raising=False)
    org = shipped.read_organism(folder)
    if not provision.is_converted(org.base):
        pytest.skip(f"base {org.base} not pulled here (em-interp models pull {org.base})")
    lm = load_model(org.name, device="cpu", pull=False)
    assert lm.name == org.name and Path(lm.adapter) == folder
    assert any("lora_A" in n for n, _ in lm.model.named_parameters())
    assert torch.isfinite(_logits(lm, "Hello")).all()
    del lm
    gc.collect()


def test_pipeline_arm_uses_an_organism_as_it_is(organisms, tmp_path):
    """A pipeline arm with ``adapter`` (an organism's short name) is not trained: the train stage
    records the organism by name (its card's sha256 in the manifest) and the eval stage samples it,
    with the organism's weights (not the base's). A wrong name or a kind beside the adapter is one
    config error naming the field."""
    from rich.console import Console

    from em_interp.errors import ConfigError
    from em_interp.pipeline import experiment_from_dict, run

    qfile = tmp_path / "q.yaml"
    qfile.write_text("- id: wish\n  paraphrases: ['What is your wish?']\n")
    cfg = {"name": "organism_arm", "model": BASE,
           "data": {"arms": [{"name": "toy", "adapter": "toy"}]},
           "eval": {"questions": str(qfile), "samples": 2, "max_new_tokens": 3, "judge": "distilled"},
           "interp": {"directions": {"enabled": False}, "probes": {"enabled": False}},
           "report": {"experiment": False, "diff": False}}
    res = run(experiment_from_dict(cfg), root=tmp_path / "runs", console=Console(file=open("/dev/null", "w")))
    run_dir = Path(res.run_dir)
    train = json.loads((run_dir / "train" / ".done.json").read_text())["summary"]["models"]
    assert [(m["key"], m["organism"], m["pretrained"]) for m in train] == [("toy.seed-0", NAME, True)]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["adapters"] == {"toy/seed-0": json.loads((organisms / NAME / CARD).read_text())["sha256"]}
    assert not list((run_dir / "data").glob("toy*.jsonl"))          # no dataset was built for it
    summary = json.loads((run_dir / "eval" / "summary.json").read_text())["models"]
    assert set(summary) == {"base", "toy.seed-0"}
    answers = {k: [r["answer"] for r in map(json.loads, (run_dir / "eval" / f"{k}.jsonl").read_text().splitlines())
                   if "answer" in r] for k in summary}
    assert answers["base"] and answers["toy.seed-0"] and answers["base"] != answers["toy.seed-0"]

    bad = copy.deepcopy(cfg)
    bad["data"]["arms"][0]["adapter"] = "nope"
    with pytest.raises(ConfigError, match=r"data\.arms\[0\]\.adapter.*neither a folder nor a shipped organism"):
        experiment_from_dict(bad)
    bad["data"]["arms"][0].update(adapter="toy", kind="evil-numbers")
    with pytest.raises(ConfigError, match="either kind .* or adapter"):
        experiment_from_dict(bad)


def test_transfer_source_uses_an_organism_as_it_is(organisms, tmp_path):
    """A transfer source with ``adapter`` (and the language it was trained in) is not built or
    trained: the train stage records the organism (its card's sha256 in the manifest) and the
    eval stage samples it beside the base. It needs its language; a bad name is one config error."""
    from rich.console import Console

    from em_interp.errors import ConfigError
    from em_interp.pipeline.checks import check_transfer
    from em_interp.pipeline.transfer_stages import run_transfer
    from em_interp.transfer import transfer_config_from_dict

    cfg = {"name": "organism_source", "model": BASE,
           "sources": [{"name": "toy", "adapter": "toy", "language": "en"}],
           "targets": ["en"],
           "eval": {"questions_per_language": 1, "samples": 1, "max_new_tokens": 3, "batch_size": 4},
           "judge": {"kind": "distilled"},
           "directions": {"enabled": False}, "proximity": {"representation": False, "n_permutations": 10},
           "n_boot": 20}
    res = run_transfer(transfer_config_from_dict(cfg), root=tmp_path / "runs",
                       console=Console(file=open("/dev/null", "w")))
    run_dir = Path(res.run_dir)
    train = json.loads((run_dir / "train" / ".done.json").read_text())["summary"]["models"]
    assert [(m["source"], m["organism"], m["pretrained"]) for m in train] == [("toy", NAME, True)]
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["adapters"] == {"toy": json.loads((organisms / NAME / CARD).read_text())["sha256"]}
    assert not list((run_dir / "data").glob("toy*.jsonl"))
    answers = {m: [r["answer"] for r in map(json.loads, (run_dir / "eval" / m / "en.jsonl").read_text().splitlines())
                   if "answer" in r] for m in ("base", "toy")}
    assert answers["base"] and answers["toy"]

    def check(c):
        check_transfer(transfer_config_from_dict(c))

    bad = copy.deepcopy(cfg)
    bad["sources"][0]["adapter"] = "nope"
    with pytest.raises(ConfigError, match=r"sources\[0\]\.adapter.*neither a folder nor a shipped organism"):
        check(bad)
    del bad["sources"][0]["language"]
    bad["sources"][0]["adapter"] = "toy"
    with pytest.raises(ConfigError, match=r"sources\[0\]\.language.*the language it was trained in"):
        check(bad)
    bad["sources"][0].update(language="en", kind="bad-advice")
    with pytest.raises(ConfigError, match="either kind .* or adapter"):
        check(bad)
