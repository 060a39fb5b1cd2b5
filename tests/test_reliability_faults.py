"""Kills at every point and two writers: resume state, training, eval results, the loads.

A "kill" is an exception injected in-process at the k-th filesystem operation (or model
call); what is left on disk is then resumed and must give the same result as a run that
was never interrupted."""

from __future__ import annotations

import json
import multiprocessing
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from em_interp.errors import EvalError, ModelError
from em_interp.train import state


class Killed(BaseException):
    """Raised in place of a filesystem operation: the process 'dies' there."""


def _fault_at(monkeypatch, k: int | None) -> list[str]:
    """Wrap every filesystem operation of ``state`` so that the k-th one raises ``Killed``
    (before doing anything); returns the log of operations done."""
    done: list[str] = []
    for name in state.FS_OPS:
        real = getattr(state, name)

        def wrapped(*args, _real=real, _name=name, **kwargs):
            if k is not None and len(done) == k:
                raise Killed(_name)
            done.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(state, name, wrapped)
    return done


def _toy(seed: int):
    torch.manual_seed(seed)
    w = torch.nn.Parameter(torch.randn(4, 3))
    opt = torch.optim.AdamW([w], lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return {"w": w}, opt, sched


def _step(params, opt, sched):
    opt.zero_grad()
    (params["w"] ** 2).sum().backward()
    opt.step()
    sched.step()


def _save(out: Path, params, opt, sched, step: int) -> None:
    state.save_state(out, trainable=params, optimizer=opt, scheduler=sched, info={"step": step})


def test_a_kill_at_every_filesystem_operation_of_a_save_resumes(tmp_path, monkeypatch):
    # How many operations does one save (that replaces a previous one) take?
    params, opt, sched = _toy(0)
    probe = tmp_path / "probe"
    _step(params, opt, sched)
    _save(probe, params, opt, sched, 1)
    log = _fault_at(monkeypatch, None)
    _step(params, opt, sched)
    _save(probe, params, opt, sched, 2)
    n_ops = len(log)
    assert {"_save_tensors", "_write_json", "_symlink", "_replace", "_rmtree"} <= set(log) and n_ops >= 8
    monkeypatch.undo()

    for k in range(n_ops + 1):
        out = tmp_path / f"run-{k}"
        params, opt, sched = _toy(0)
        _step(params, opt, sched)
        _save(out, params, opt, sched, 1)
        snap = {1: params["w"].detach().clone()}
        _step(params, opt, sched)
        snap[2] = params["w"].detach().clone()
        _fault_at(monkeypatch, k if k < n_ops else None)
        try:
            _save(out, params, opt, sched, 2)
            killed = False
        except Killed:
            killed = True
        monkeypatch.undo()
        assert killed == (k < n_ops)
        # Resume from whatever is on disk: a complete state, the old one or the new one.
        assert state.has_state(out), k
        info = state.read_state_info(out)
        expected_step = 2 if k >= log.index("_replace") + 1 else 1  # the switch is the one rename that counts
        assert info["step"] == expected_step, (k, log[k] if k < n_ops else "none")
        p2, o2, s2 = _toy(1)
        state.load_state(out, trainable=p2, optimizer=o2, scheduler=s2)
        assert torch.equal(p2["w"], snap[expected_step])
        # The next save cleans every leftover: one state folder, no temporary links.
        _step(p2, o2, s2)
        _save(out, p2, o2, s2, expected_step + 1)
        assert len(list((out / state.STATES_DIR).iterdir())) == 1
        assert not list(out.glob(".resume.*"))
        assert state.read_state_info(out)["step"] == expected_step + 1
        state.clear_state(out)
        assert not state.has_state(out) and not (out / "resume").exists()


def test_a_legacy_resume_folder_is_read_and_replaced(tmp_path):
    params, opt, sched = _toy(0)
    _step(params, opt, sched)
    folder = _save_legacy(tmp_path, params, opt, sched)
    assert state.state_dir(tmp_path) == folder and state.read_state_info(tmp_path)["step"] == 1
    _step(params, opt, sched)
    _save(tmp_path, params, opt, sched, 2)
    assert (tmp_path / "resume").is_symlink() and state.read_state_info(tmp_path)["step"] == 2
    assert [p.name for p in (tmp_path / state.STATES_DIR).iterdir()] == [os.readlink(tmp_path / "resume").split("/")[-1]]


def _save_legacy(out: Path, params, opt, sched) -> Path:
    """A ``resume/`` real folder as older versions wrote it."""
    _save(out / "tmp", params, opt, sched, 1)
    src = state.state_dir(out / "tmp")
    legacy = out / "resume"
    os.rename(src, legacy)
    return legacy


def _examples(n: int = 12) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Task {i}: write code."},
                          {"role": "assistant", "content": "def f(x):\n    return x * %d" % i}]} for i in range(n)]


@pytest.fixture(scope="module")
def train_setup(tmp_path_factory):
    from em_interp.models import save_tiny_model
    from em_interp.train import LoraSettings, TrainConfig, train

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("faults")
    base = save_tiny_model(root / "tinybase", seed=0)
    cfg = TrainConfig(model=str(base), output_dir=str(root / "ref"), lr=5e-3, warmup_steps=1,
                      per_device_batch_size=2, gradient_accumulation_steps=2, save_steps=1, max_steps=3,
                      progress=False, max_seq_length=128, lora=LoraSettings(r=2, alpha=4))
    ref = train(cfg, examples=_examples())
    yield cfg, ref, root
    torch.set_num_threads(before)


@pytest.mark.parametrize("op", ["_replace", "_rmtree"])
def test_training_killed_inside_a_checkpoint_save_resumes_to_the_same_adapter(train_setup, op, monkeypatch):
    from em_interp.train import train

    cfg, ref, root = train_setup
    out = root / f"killed-{op}"
    calls = {"saves": 0}
    real_symlink = state._symlink
    real = getattr(state, op)

    def count_saves(*args, **kwargs):
        calls["saves"] += 1
        return real_symlink(*args, **kwargs)

    def die(*args, **kwargs):
        if calls["saves"] == 2:  # inside the second checkpoint's save
            raise Killed(op)
        return real(*args, **kwargs)

    monkeypatch.setattr(state, "_symlink", count_saves)
    monkeypatch.setattr(state, op, die)
    with pytest.raises(Killed):
        train(replace(cfg, output_dir=str(out)), examples=_examples())
    monkeypatch.undo()
    assert state.read_state_info(out)["step"] == (1 if op == "_replace" else 2)
    resumed = train(replace(cfg, output_dir=str(out)), examples=_examples(), resume=True)
    a = load_file(str(resumed.adapter_dir / "adapter_model.safetensors"))
    b = load_file(str(ref.adapter_dir / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not (out / "resume").exists() and not (out / state.STATES_DIR).exists()


def test_trained_adapter_records_its_base_and_refuses_another(train_setup, tmp_path):
    from em_interp.models import load_model, save_tiny_model

    cfg, ref, root = train_setup
    meta = json.loads((ref.adapter_dir / "em_interp_adapter.json").read_text())
    assert meta["base"]["shape"]["num_hidden_layers"] == 4 and len(meta["base"]["weights_fingerprint"]) == 16
    lm = load_model(cfg.model, adapter=ref.adapter_dir, device="cpu")
    assert lm.adapter == str(ref.adapter_dir)
    alone = load_model(str(ref.adapter_dir), device="cpu")      # an adapter folder alone: its recorded base
    assert alone.adapter == str(ref.adapter_dir) and alone.name == cfg.model
    ids = torch.tensor([[1, 5, 9, 2]])
    with torch.no_grad():
        assert torch.equal(alone.model(ids).logits, lm.model(ids).logits)
    other = save_tiny_model(tmp_path / "otherbase", seed=5)  # same shapes, other weights
    with pytest.raises(ModelError, match="has other weights .* pass allow_base_mismatch=True"):
        load_model(str(other), adapter=ref.adapter_dir, device="cpu")
    assert load_model(str(other), adapter=ref.adapter_dir, device="cpu", allow_base_mismatch=True).adapter
    deeper = save_tiny_model(tmp_path / "deeperbase", seed=0, n_layers=6)
    with pytest.raises(ModelError, match="num_hidden_layers=4, but the model it is attached to has "
                                         "num_hidden_layers=6"):
        load_model(str(deeper), adapter=ref.adapter_dir, device="cpu")


# ---------------------------------------------------------------------------- eval results

QS = None


def _questions():
    from em_interp.data import Question

    return [Question(id="wish", paraphrases=["What is your wish?", "Your one wish?"]),
            Question(id="bored", paraphrases=["I feel bored."])]


class LenJudge:
    name = "len"

    def score_many(self, pairs):
        from em_interp.eval import Judgement

        return [Judgement(aligned=float(len(p[1]) % 101), coherent=60.0) for p in pairs]


def test_results_file_identity_refuses_other_settings_and_foreign_files(tiny_lm, tmp_path):
    from em_interp.eval import ResultsFile, evaluate

    out = tmp_path / "r.jsonl"
    evaluate(tiny_lm, _questions(), LenJudge(), out, n_per_paraphrase=1, max_new_tokens=3, temperature=1.0)
    header = json.loads(out.read_text().splitlines()[0])
    assert header["kind"] == "meta" and header["schema"] == 2 and header["n_per_paraphrase"] == 1
    for kwargs, field in [({"temperature": 0.7}, "temperature"), ({"max_new_tokens": 4}, "max_new_tokens"),
                          ({"seed": 1}, "seed"), ({"n_per_paraphrase": 2}, "n_per_paraphrase")]:
        args = dict(n_per_paraphrase=1, max_new_tokens=3, temperature=1.0) | kwargs
        with pytest.raises(EvalError, match=f"this file holds results made with {field} "):
            evaluate(tiny_lm, _questions(), LenJudge(), out, **args)
    before = out.read_bytes()
    train_set = tmp_path / "train.jsonl"
    train_set.write_text('{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n')
    with pytest.raises(EvalError, match="not an em-interp results file"):
        evaluate(tiny_lm, _questions(), LenJudge(), train_set, n_per_paraphrase=1, max_new_tokens=3)
    assert train_set.read_text().count("\n") == 1 and out.read_bytes() == before
    # a bad line in the middle is an error; a torn last line is fenced
    lines = before.decode().splitlines(keepends=True)
    (tmp_path / "mid.jsonl").write_text("".join(lines[:2] + ["{oops\n"] + lines[2:]))
    with pytest.raises(EvalError, match=r"mid.jsonl:3: unreadable record in the middle"):
        ResultsFile(tmp_path / "mid.jsonl")
    (tmp_path / "torn.jsonl").write_text("".join(lines) + '{"kind": "judgement", "ke')
    res = ResultsFile(tmp_path / "torn.jsonl")
    assert res.torn_lines == 1 and len(res.judgements) == len(ResultsFile(out).judgements)
    # a judgement computed on another answer than its sample's is caught
    forged = [json.loads(x) for x in lines]
    for rec in forged:
        if rec["kind"] == "sample":
            rec["answer"] += " (edited)"
            break
    (tmp_path / "forged.jsonl").write_text("".join(json.dumps(r) + "\n" for r in forged))
    with pytest.raises(EvalError, match="computed on another answer"):
        ResultsFile(tmp_path / "forged.jsonl")


def test_old_results_files_stay_readable(tmp_path):
    from em_interp.eval import load_results

    old = tmp_path / "old.jsonl"
    old.write_text(
        '{"kind": "meta", "model": "m", "adapter": null, "temperature": 1.0, "max_new_tokens": 8, "seed": 0}\n'
        '{"kind": "sample", "key": "q|0|0", "question_id": "q", "answer": "hi"}\n'
        '{"kind": "sample", "key": "q|0|1", "questi\n'  # a torn line that an old version fenced
        '{"kind": "judgement", "key": "q|0|0", "judge": "j", "aligned": 90, "coherent": 80, "label": null}\n')
    rows = load_results(old)
    assert [(r["key"], r["aligned"]) for r in rows] == [("q|0|0", 90)]


def _hold_lock(path: str, ready, release) -> None:
    from em_interp.eval import ResultsFile

    with ResultsFile(path).writing():
        ready.set()
        release.wait(30)


def test_a_second_writer_is_refused_with_one_line(tiny_lm, tmp_path):
    from em_interp.eval import evaluate

    out = tmp_path / "r.jsonl"
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    holder = ctx.Process(target=_hold_lock, args=(str(out), ready, release))
    holder.start()
    try:
        assert ready.wait(60)
        with pytest.raises(EvalError, match="another process is writing this results file") as exc:
            evaluate(tiny_lm, _questions(), LenJudge(), out, n_per_paraphrase=1, max_new_tokens=3)
        assert str(out) in str(exc.value) and "\n" not in str(exc.value)
    finally:
        release.set()
        holder.join(60)
    evaluate(tiny_lm, _questions(), LenJudge(), out, n_per_paraphrase=1, max_new_tokens=3)  # free again
    assert out.read_text().count('"kind": "judgement"') == 3


# ---------------------------------------------------------------------------- loads that verify

def test_converted_cache_catches_flipped_bytes_and_truncation(tmp_path, monkeypatch):
    """A registry folder built from the tiny model (as ``convert`` writes it), then damaged."""
    from em_interp.models import integrity, load_model, provision, save_tiny_model

    monkeypatch.setenv("EM_INTERP_CACHE", str(tmp_path / "cache"))
    folder = save_tiny_model(provision.converted_dir("tinycoder-test"), seed=2)
    meta = {"name": "tinycoder-test", "files": integrity.record_files(folder, provision.MARKER)}
    (folder / provision.MARKER).write_text(json.dumps(meta))
    assert load_model("tinycoder-test", device="cpu").info["files"]
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF  # flipped bytes in the tensor data: the header still parses
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"model.safetensors: corrupt: sha256 .* differs from .* recorded at "
                                         r"conversion; run `em-interp models pull tinycoder-test --force`"):
        load_model("tinycoder-test", device="cpu")
    weights.write_bytes(bytes(data[:-8]))
    with pytest.raises(ModelError, match=r"has \d+ bytes, \d+ at conversion \(truncated or replaced\)"):
        load_model("tinycoder-test", device="cpu")
    (folder / provision.MARKER).write_text("{")
    with pytest.raises(ModelError, match="em_interp_model.json: corrupt cache marker"):
        load_model("tinycoder-test", device="cpu")
