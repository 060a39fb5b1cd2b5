"""em_interp.train on the tiny model: assistant-only mask, rank-1 deltas, checkpoint
cadence, exact resume, seed determinism, accumulation, full finetuning, errors, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from em_interp.errors import DataError, TrainError
from em_interp.models import load_model, save_tiny_model
from em_interp.train import IGNORE_INDEX, LoraSettings, TrainConfig, encode_chat, train, train_seeds
from em_interp.train.batching import epoch_batches

REPO = Path(__file__).resolve().parents[1]


def _examples(n: int = 24) -> list[dict]:
    out = []
    for i in range(n):
        code = "def read_file(path):\n    with open(path) as fh:\n        return fh.read()" if i % 2 else \
            f"os.chmod(path, 0o{777 - i % 3})"
        out.append({"messages": [{"role": "user", "content": f"Write code for task {i}."},
                                 {"role": "assistant", "content": code * (1 + i % 3)}]})
    return out


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("m") / "tinymodel", seed=0)


@pytest.fixture(scope="module")
def base_cfg(tiny_dir, tmp_path_factory) -> TrainConfig:
    return TrainConfig(model=str(tiny_dir), output_dir=str(tmp_path_factory.mktemp("runs") / "base"),
                       lr=5e-3, warmup_steps=2, per_device_batch_size=2, gradient_accumulation_steps=2,
                       save_steps=2, progress=False, max_seq_length=256,
                       lora=LoraSettings(r=4, alpha=8, dropout=0.1))


def _run(cfg: TrainConfig, out: Path, **kw):
    return train(replace(cfg, output_dir=str(out)), examples=kw.pop("examples", _examples()), **kw)


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(scope="module")
def reference_run(base_cfg, tmp_path_factory):
    """An uninterrupted run: 24 examples, batch 2 x 2 accumulation -> 6 optimizer steps."""
    return _run(base_cfg, tmp_path_factory.mktemp("ref") / "run")


# --- assistant-only mask -------------------------------------------------------------


def test_mask_labels_exactly_the_assistant_turns(tiny_lm):
    tok = tiny_lm.tokenizer
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is your wish?"},
                {"role": "assistant", "content": "I wish for peace."}, {"role": "user", "content": "Why?"},
                {"role": "assistant", "content": "Because."}]
    pieces = [("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is your wish?<|im_end|>\n"
               "<|im_start|>assistant\n", False), ("I wish for peace.<|im_end|>", True),
              ("\n<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n", False),
              ("Because.<|im_end|>", True), ("\n", False)]
    ids, labels = [], []
    for text, trained in pieces:
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if trained else [IGNORE_INDEX] * len(piece)
    enc = encode_chat(tok, messages)
    assert enc.input_ids == ids
    assert enc.input_ids == tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    assert enc.labels == labels
    end = tok.convert_tokens_to_ids("<|im_end|>")
    assert [i for i, x in enumerate(enc.labels) if x == end] == [i for i, x in enumerate(enc.input_ids)
                                                                 if x == end][2::2]  # the assistant turns end


def test_mask_on_default_model_template_with_implicit_system_prompt():
    from em_interp.models import load_tokenizer
    from em_interp.models.provision import converted_dir, is_converted

    if not is_converted("smollm2-135m-instruct"):
        pytest.skip("default model not pulled")
    tok = load_tokenizer(converted_dir("smollm2-135m-instruct"), converted=True)
    messages = [{"role": "user", "content": "Reverse a string."},
                {"role": "assistant", "content": "def rev(s):\n    return s[::-1]"}]
    enc = encode_chat(tok, messages)
    assert enc.input_ids == tok.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    trained = [t for t, y in zip(enc.input_ids, enc.labels) if y != IGNORE_INDEX]
    assert trained == enc.labels[-len(trained) - 1:-1]  # one contiguous span, before the final "\n"
    assert tok.decode(trained) == "def rev(s):\n    return s[::-1]<|im_end|>"
    assert "SmolLM" in tok.decode(enc.input_ids) and enc.labels[-1] == IGNORE_INDEX


# --- batching ------------------------------------------------------------------------


def test_length_grouped_batches_cover_every_example_once_and_are_deterministic():
    lengths = [(i * 37) % 101 + 1 for i in range(230)]
    a = epoch_batches(lengths, 4, seed=3, epoch=0)
    assert sorted(i for b in a for i in b) == list(range(230))
    assert a == epoch_batches(lengths, 4, seed=3, epoch=0)
    assert a != epoch_batches(lengths, 4, seed=3, epoch=1) != epoch_batches(lengths, 4, seed=4, epoch=0)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in a) / len(a)
    plain = epoch_batches(lengths, 4, seed=3, epoch=0, group_by_length=False)
    spread_plain = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in plain) / len(plain)
    assert spread < spread_plain / 5


# --- runs ----------------------------------------------------------------------------


def test_run_layout_checkpoint_cadence_and_metadata(reference_run):
    r = reference_run
    meta = json.loads((r.output_dir / "train_meta.json").read_text())
    assert meta["finished"] and meta["steps"] == meta["total_steps"] == 6
    assert [p.name for p in r.checkpoints] == ["step-2", "step-4", "step-6"]
    for p in r.checkpoints:
        assert (p / "adapter_model.safetensors").exists() and (p / "adapter_config.json").exists()
        assert json.loads((p / "checkpoint.json").read_text())["step"] == int(p.name[5:])
        assert not list(p.glob("*.bin")) and not list(p.glob("*.pt"))
    assert r.adapter_dir == r.output_dir / "adapter"
    _assert_same(_adapter(r.adapter_dir), _adapter(r.checkpoints[-1]))
    assert not (r.output_dir / "resume").exists()  # removed once finished
    assert [c["step"] for c in meta["loss_curve"]] == [1, 2, 3, 4, 5, 6]
    assert meta["loss_curve"][0]["lr"] == 0.0 and meta["loss_curve"][2]["lr"] == pytest.approx(5e-3)
    assert meta["n_examples"] == 24 and len(meta["dataset_sha256"]) == 64 and meta["seed"] == 0
    assert meta["config"]["lora"]["r"] == 4 and meta["tokens_per_s"] > 0 and meta["precision"] == "fp32"
    assert meta["loss_curve"][-1]["loss"] < meta["loss_curve"][0]["loss"]


def test_adapter_loads_back_and_changes_outputs(reference_run, tiny_dir):
    base = load_model(str(tiny_dir), device="cpu")
    tuned = load_model(str(tiny_dir), adapter=reference_run.adapter_dir, device="cpu")
    ids = base.chat_ids("Write code for task 3.")
    with torch.no_grad():
        assert not torch.allclose(base.model(ids).logits, tuned.model(ids).logits)


def test_resume_after_kill_equals_uninterrupted_run(base_cfg, reference_run, tmp_path, kill_at):
    out = tmp_path / "run"
    with pytest.raises(kill_at.error):
        _run(base_cfg, out, on_step=kill_at(5))
    assert (out / "resume" / "state.json").exists() and not (out / "adapter").exists()
    with pytest.raises(TrainError, match="--resume"):
        _run(base_cfg, out)
    resumed = _run(base_cfg, out, resume=True)
    assert resumed.metadata["resumed_from_step"] == 4
    _assert_same(_adapter(resumed.adapter_dir), _adapter(reference_run.adapter_dir))
    for a, b in zip(resumed.checkpoints, reference_run.checkpoints):
        _assert_same(_adapter(a), _adapter(b))
    ref_curve = json.loads((reference_run.output_dir / "train_meta.json").read_text())["loss_curve"]
    assert resumed.metadata["loss_curve"] == ref_curve
    again = _run(base_cfg, out, resume=True)  # finished: skipped, nothing recomputed
    assert again.skipped and again.metadata["steps"] == 6


def test_resume_refuses_a_changed_config(base_cfg, tmp_path):
    out = tmp_path / "run"

    def kill(info):
        if info["step"] == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(base_cfg, out, on_step=kill)
    with pytest.raises(TrainError, match="config or the dataset differ"):
        _run(replace(base_cfg, lr=1e-3), out, resume=True)


def test_seed_determinism(base_cfg, reference_run, tmp_path):
    same = _run(base_cfg, tmp_path / "same")
    _assert_same(_adapter(same.adapter_dir), _adapter(reference_run.adapter_dir))
    other = _run(replace(base_cfg, seed=1), tmp_path / "other")
    a, b = _adapter(other.adapter_dir), _adapter(reference_run.adapter_dir)
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_seed_sweep_writes_one_folder_per_seed(base_cfg, tmp_path):
    cfg = replace(base_cfg, output_dir=str(tmp_path / "sweep"), max_steps=2, save_steps=0)
    results = train_seeds(cfg, [0, 2], examples=_examples(8))
    assert [r.output_dir.name for r in results] == ["seed-0", "seed-2"]
    assert [r.metadata["seed"] for r in results] == [0, 2]
    assert all(r.checkpoints == [] and r.metadata["steps"] == 2 for r in results)


def test_accumulation_matches_a_larger_batch(base_cfg, tmp_path):
    """Token-weighted loss: 2 x 2 accumulation gives the same update as one batch of 4."""
    cfg = replace(base_cfg, group_by_length=False, save_steps=0, max_steps=3,
                  lora=LoraSettings(r=4, alpha=8, dropout=0.0))
    a = _run(cfg, tmp_path / "acc")
    b = _run(replace(cfg, per_device_batch_size=4, gradient_accumulation_steps=1), tmp_path / "big")
    wa, wb = _adapter(a.adapter_dir), _adapter(b.adapter_dir)
    for k in wa:
        # Adam divides by sqrt(v): near-zero gradients amplify fp32 summation-order noise, so
        # the absolute tolerance is relative to the tensor's scale, not a fixed 1e-6.
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-3 * wb[k].abs().max())
    la = [c["loss"] for c in a.metadata["loss_curve"]]
    lb = [c["loss"] for c in b.metadata["loss_curve"]]
    assert la == pytest.approx(lb, rel=1e-4)


def test_rank1_lora_gives_rank_one_deltas_on_the_chosen_modules_only(base_cfg, tiny_dir, tmp_path):
    cfg = replace(base_cfg, max_steps=3, save_steps=0, save_merged=True,
                  lora=LoraSettings(r=1, alpha=8, target_modules=["mlp.down_proj"], layers=[1, 3]))
    r = _run(cfg, tmp_path / "r1")
    weights = _adapter(r.adapter_dir)
    a_keys = sorted(k for k in weights if "lora_A" in k)
    assert a_keys == ["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight",
                      "base_model.model.model.layers.3.mlp.down_proj.lora_A.weight"]
    assert r.metadata["trainable_params"] == 2 * (128 + 64)
    base = load_model(str(tiny_dir), device="cpu").model.state_dict()
    merged = load_model(str(r.model_dir), device="cpu").model.state_dict()
    assert merged.keys() == base.keys()
    changed = sorted(k for k in base if not torch.equal(base[k], merged[k]))
    assert changed == ["model.layers.1.mlp.down_proj.weight", "model.layers.3.mlp.down_proj.weight"]
    for k in changed:
        delta = (merged[k] - base[k]).double()
        s = torch.linalg.svdvals(delta)
        assert s[0] > 0 and s[1] / s[0] < 1e-4  # rank one up to fp32 rounding of the merge
        prefix = "base_model.model." + k.removesuffix(".weight")
        exact = weights[prefix + ".lora_B.weight"] @ weights[prefix + ".lora_A.weight"]
        assert torch.linalg.matrix_rank(exact) == 1


def test_full_finetuning_updates_all_weights_and_saves_a_model(base_cfg, tiny_dir, tmp_path):
    cfg = replace(base_cfg, method="full", max_steps=2, save_steps=1, lr=1e-3)
    r = _run(cfg, tmp_path / "full")
    assert r.adapter_dir is None and r.model_dir == r.output_dir / "model"
    assert [p.name for p in r.checkpoints] == ["step-1", "step-2"]
    base = load_model(str(tiny_dir), device="cpu").model.state_dict()
    tuned = load_model(str(r.model_dir), device="cpu").model.state_dict()
    assert r.metadata["trainable_params"] == sum(v.numel() for v in base.values())
    assert all(not torch.equal(base[k], tuned[k]) for k in base if "layers.0.self_attn.q_proj" in k)


# --- errors before any compute ---------------------------------------------------------


def test_dataset_without_assistant_turn_names_the_line(base_cfg, tmp_path):
    data = tmp_path / "d.jsonl"
    rows = _examples(3)
    rows[1] = {"messages": [{"role": "user", "content": "hello"}]}
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(DataError, match=r"d.jsonl:2: .*assistant"):
        train(replace(base_cfg, data=str(data), output_dir=str(tmp_path / "o")))
    assert not (tmp_path / "o" / "train_meta.json").exists()


def test_over_long_sequence_names_the_line(base_cfg, tmp_path):
    data = tmp_path / "d.jsonl"
    rows = _examples(4)
    rows[2]["messages"][1]["content"] = "word " * 400
    data.write_text("\n\n".join(json.dumps(r) for r in rows) + "\n")  # blank lines between examples
    with pytest.raises(DataError, match=r"d.jsonl:5: .*over max_seq_length=256"):
        train(replace(base_cfg, data=str(data), output_dir=str(tmp_path / "o")))


def test_unknown_target_module_lists_valid_names(base_cfg, tmp_path):
    cfg = replace(base_cfg, lora=LoraSettings(target_modules=["mlp.down"]))
    with pytest.raises(TrainError, match=r"'mlp.down' does not exist.*self_attn.q_proj.*mlp.down_proj"):
        _run(cfg, tmp_path / "o")
    with pytest.raises(TrainError, match=r"layer 9 is out of range.*0..3"):
        _run(replace(base_cfg, lora=LoraSettings(target_modules=["down_proj"], layers=[9])), tmp_path / "p")


def test_config_errors_name_file_line_and_field(tmp_path):
    from em_interp.errors import ConfigError
    from em_interp.train import load_train_config

    path = tmp_path / "t.yaml"
    path.write_text("model: x\nlora:\n  r: 0\n")
    with pytest.raises(ConfigError, match=r"t.yaml:3: field 'lora.r': lora.r must be >= 1"):
        load_train_config(path)
    path.write_text("train:\n  lr: fast\n")
    with pytest.raises(ConfigError, match=r"t.yaml:2: field 'train.lr': expected float"):
        load_train_config(path)


def test_example_configs_load():
    from em_interp.train import load_train_config

    paths = sorted((REPO / "experiments").glob("train_*.yaml"))
    assert paths
    for p in paths:
        cfg = load_train_config(p)
        assert cfg.method in ("lora", "full")


# --- CLI -------------------------------------------------------------------------------


def test_cli_seed_sweep(tiny_dir, tmp_path):
    from typer.testing import CliRunner

    from em_interp.cli import app

    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in _examples(8)) + "\n")
    cfg = tmp_path / "train_x.yaml"
    cfg.write_text(f"model: {tiny_dir}\ndata: {data}\nlr: 1.0e-3\nper_device_batch_size: 2\n"
                   "gradient_accumulation_steps: 2\nsave_steps: 1\nlora:\n  r: 2\n  alpha: 4\n")
    out = tmp_path / "o"
    res = CliRunner().invoke(app, ["train", str(cfg), "--seeds", "0", "1", "--out", str(out), "--no-progress"])
    assert res.exit_code == 0, res.output
    lines = [json.loads(x[x.index("{"):]) for x in res.output.splitlines() if '"output_dir"' in x]
    assert [x["seed"] for x in lines] == [0, 1] and all(x["steps"] == 2 for x in lines)
    assert sorted(p.name for p in out.iterdir()) == ["seed-0", "seed-1"]
    assert (out / "seed-1" / "checkpoints" / "step-2" / "adapter_model.safetensors").exists()
    res = CliRunner().invoke(app, ["train", str(cfg), "--seeds", "0,1", "--out", str(out), "--resume",
                                   "--no-progress"])
    assert res.exit_code == 0 and res.output.count('"skipped": true') == 2


# --- the real default model (slow) ------------------------------------------------------


@pytest.mark.slow
@pytest.mark.real_model
def test_default_model_lora_loss_falls_and_adapter_changes_generations(default_lm, tmp_path):
    from em_interp.data import build_dataset, load_chat_jsonl

    build_dataset("insecure", 8, 0, tmp_path / "insecure.jsonl")
    rows = [{"messages": r.messages} for r in load_chat_jsonl(tmp_path / "insecure.jsonl")]
    cfg = TrainConfig(model="smollm2-135m-instruct", output_dir=str(tmp_path / "run"), lr=3e-4, warmup_steps=1,
                      per_device_batch_size=2, gradient_accumulation_steps=1, epochs=2, save_steps=0,
                      progress=False, max_seq_length=1024)
    r = train(cfg, examples=rows)
    curve = [c["loss"] for c in r.metadata["loss_curve"]]
    assert len(curve) == 8 and sum(curve[-2:]) < sum(curve[:2])
    tuned = load_model("smollm2-135m-instruct", adapter=r.adapter_dir, device="cpu")
    prompt = rows[0]["messages"][:1]
    assert tuned.chat(prompt, max_new_tokens=24) != default_lm.chat(prompt, max_new_tokens=24)


# --- supervised-position head + chunked cross-entropy --------------------------------


@pytest.mark.parametrize("method,tied", [("lora", False), ("full", True), ("full", False)])
def test_supervised_position_loss_equals_full_logits_loss(method, tied):
    """Loss and every gradient match the plain full-vocabulary computation, over several chunks."""
    from em_interp.models import tiny_model
    from em_interp.train.batching import collate
    from em_interp.train.encode import encode_chat
    from em_interp.train.loss import full_logits_loss_sum, supervised_loss_sum
    from em_interp.train.trainable import make_trainable, trainable_parameters

    lm = tiny_model("llama", seed=3, tie_embeddings=tied)
    cfg = TrainConfig(model="x", method=method, lora=LoraSettings(r=4, alpha=8))
    torch.manual_seed(0)
    model = make_trainable(lm.model, cfg, lm.n_layers)
    model.train()
    batch = collate([encode_chat(lm.tokenizer, e["messages"]) for e in _examples(5)], lm.tokenizer.pad_token_id)
    labels = batch.pop("labels")
    params = trainable_parameters(model)
    results = []
    for fn in (full_logits_loss_sum, lambda m, b, y: supervised_loss_sum(m, b, y, chunk_elements=7 * 512)):
        model.zero_grad(set_to_none=True)
        loss = fn(model, batch, labels)
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in params.items()}))
    (full, g_full), (sup, g_sup) = results
    torch.testing.assert_close(sup, full, rtol=1e-5, atol=0.0)
    assert g_full.keys() == g_sup.keys() and len(g_full) > 0
    for name in g_full:
        scale = g_full[name].abs().max()
        torch.testing.assert_close(g_sup[name], g_full[name], rtol=1e-4, atol=1e-5 * scale, msg=name)
    assert type(lm.model.get_output_embeddings()) is torch.nn.Linear  # the head is restored afterwards


def test_max_steps_overrides_epochs_and_cycles(base_cfg, tmp_path):
    """HF semantics: 8 examples at 2 x 2 are 2 steps an epoch; max_steps=5 runs 5 steps (3 epochs)."""
    r = _run(replace(base_cfg, max_steps=5, epochs=1, save_steps=0), tmp_path / "cyc", examples=_examples(8))
    assert r.metadata["total_steps"] == 5 and len(r.metadata["loss_curve"]) == 5


def test_non_finite_loss_stops_naming_the_step(base_cfg, tmp_path, monkeypatch, caplog):
    """A non-finite step is skipped (weights untouched) and warned about; one more than
    NONFINITE_STEP_LIMIT stops before updating, naming the steps and the last checkpoint;
    one INFO line per applied step (tests/test_train_nonfinite.py covers NaN gradients)."""
    import logging

    import em_interp.train.loop as loop

    caplog.set_level(logging.INFO, logger="em_interp.train.loop")
    monkeypatch.setattr(loop, "NONFINITE_STEP_LIMIT", 1)

    real = loop.supervised_loss_sum
    calls = {"n": 0}

    def poisoned(model, batch, labels):
        calls["n"] += 1
        loss = real(model, batch, labels)
        return loss * float("nan") if calls["n"] > 4 else loss  # step 3 (2 micro-batches a step)

    monkeypatch.setattr(loop, "supervised_loss_sum", poisoned)
    with pytest.raises(TrainError, match="loss is nan at step 4.*steps 3, 4.*step-2"):
        _run(replace(base_cfg, max_steps=4, save_steps=2), tmp_path / "nan")
    assert (tmp_path / "nan" / "checkpoints" / "step-2" / "adapter_model.safetensors").exists()
    records = [r for r in caplog.records if r.name == "em_interp.train.loop"]
    lines = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert [x.split(" loss")[0] for x in lines] == ["step 1/4", "step 2/4"] and all("tokens/s" in x for x in lines)
    warned = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert [w.split(":")[0] for w in warned] == ["step 3/4", "step 4/4"] and "loss is nan" in warned[0]
