"""Bad input at every edge: each case is one line naming the file (and line/field), exit 2,
no traceback. CLI cases run in-process through ``em_interp.cli.main``; loader cases call
the loaders. Nothing here loads a real model."""

from __future__ import annotations

import json
import math
import struct

import pytest

from em_interp.errors import ConfigError, DataError, EmInterpError, EvalError, ModelError, TrainError

GOOD_CHAT = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
BOMB = "".join(f"{c}: &{c} [" + ",".join([f"*{p}"] * 9 if p else ['"lol"'] * 9) + "]\n"
               for p, c in zip([None, *"abcdefgh"], "abcdefghi"))


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of ``em-interp ARGV`` run in-process."""
    from em_interp.cli import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err


@pytest.fixture()
def files(tmp_path):
    """A folder of bad inputs, by name."""
    f = {}

    def put(name: str, data: str | bytes):
        p = tmp_path / name
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
        f[name] = p
        return p

    put("good.jsonl", GOOD_CHAT)
    put("badjson.jsonl", GOOD_CHAT + '{"messages": [\n')
    put("binary.jsonl", GOOD_CHAT.encode() + b'{"messages": "\xff\xfe"}\n')
    put("deep.jsonl", "[" * 50_000 + "\n")
    put("bomb.yaml", BOMB)
    put("recursive.yaml", "a: &a [*a]\n")
    put("binary.yaml", b"lr: 1\nmodel: \xff\xfe\n")
    put("lr_inf.yaml", "lr: .inf\n")
    put("gradnorm_nan.yaml", "max_grad_norm: .nan\n")
    put("beta.yaml", "adam_beta1: 7\n")
    put("alpha_nan.yaml", "lora: {alpha: .nan}\n")
    put("steps0.yaml", "max_steps: 0\n")
    put("train_ok.yaml", "model: tiny\nmax_steps: 2\n")
    put("eval_temp.yaml", "model: m\nquestions: q.yaml\nout: o\ntemperature: .nan\n")
    put("eval_jbs.yaml", "model: m\nquestions: q.yaml\nout: o\njudge_batch_size: 0\n")
    put("eval_opt.yaml", "model: m\nquestions: q.yaml\nout: o\njudge: {kind: distilled, options: {colour: red}}\n")
    put("questions_bad.yaml", "- id: a\n  paraphrases: []\n")
    (tmp_path / "a_dir").mkdir()
    f["a_dir"] = tmp_path / "a_dir"
    return f


# (argv template, exit code, exact message after "error: "); {name} is replaced by the path of files[name].
CLI_CASES = [
    (["data", "check", "{badjson.jsonl}"], "{badjson.jsonl}:2: invalid JSON: Expecting value (column 15)"),
    (["data", "check", "{binary.jsonl}"], "{binary.jsonl}:2: not valid UTF-8 (byte 0xff at column 15)"),
    (["data", "check", "{deep.jsonl}"], "{deep.jsonl}:1: invalid JSON: nested too deeply"),
    (["data", "check", "{bomb.yaml}"],
     "{bomb.yaml}:5: YAML expands to more than 200000 nodes through aliases; refusing (alias bomb?)"),
    (["data", "check", "{recursive.yaml}"], "{recursive.yaml}:1: recursive YAML alias (a node contains itself)"),
    (["train", "{bomb.yaml}"],
     "{bomb.yaml}:5: YAML expands to more than 200000 nodes through aliases; refusing (alias bomb?)"),
    (["train", "{recursive.yaml}"], "{recursive.yaml}:1: recursive YAML alias (a node contains itself)"),
    (["train", "{binary.yaml}"], "{binary.yaml}:2: not valid UTF-8 (byte 0xff at offset 13)"),
    (["train", "{lr_inf.yaml}"], "{lr_inf.yaml}:1: field 'lr': must be a finite number, got inf"),
    (["train", "{gradnorm_nan.yaml}"], "{gradnorm_nan.yaml}:1: field 'max_grad_norm': must be a finite number, got nan"),
    (["train", "{beta.yaml}"], "{beta.yaml}:1: field 'adam_beta1': adam_beta1 must be < 1, got 7.0"),
    (["train", "{alpha_nan.yaml}"], "{alpha_nan.yaml}:1: field 'lora.alpha': must be a finite number, got nan"),
    (["train", "{steps0.yaml}"], "{steps0.yaml}:1: field 'max_steps': max_steps must be >= 1, got 0"),
    (["train", "{train_ok.yaml}", "--max-steps", "0"], "{train_ok.yaml}: max_steps must be >= 1, got 0"),
    (["train", "{a_dir}"], "{a_dir}: is a directory, expected a file"),
    (["train", "{train_ok.yaml}", "--out", "{good.jsonl}"], "{good.jsonl}: output folder is a file; give a folder "
                                                            "with --out"),
    (["eval", "--config", "{eval_temp.yaml}"], "{eval_temp.yaml}:4: field 'temperature': must be a finite number, got nan"),
    (["eval", "--config", "{eval_jbs.yaml}"], "{eval_jbs.yaml}:4: field 'judge_batch_size': judge_batch_size must be >= 1, got 0"),
    (["eval", "--config", "{eval_opt.yaml}"],
     "{eval_opt.yaml}:4: field 'judge': unknown option 'colour' for the distilled judge; valid: weights_dir, "
     "device, noscore_threshold, batch_size…"),  # … : more options may follow
    (["eval", "summarize", "{good.jsonl}"],
     "{good.jsonl}:1: not an em-interp results file (its first line is not a results header); refusing to read "
     "or append; use another --out"),
    (["extract", "--model", "tiny:llama", "--positive", "{good.jsonl}", "--negative", "{good.jsonl}", "--limit", "-1"],
     "field 'limit': --limit must be >= 1, got -1"),
]


@pytest.mark.parametrize("argv,message", CLI_CASES, ids=[" ".join(c[0][:2]) + f"-{i}" for i, c in enumerate(CLI_CASES)])
def test_cli_bad_input_is_one_line_exit_2(argv, message, files, capsys):
    fill = {f"{{{k}}}": str(v) for k, v in files.items()}

    def sub(s: str) -> str:
        for k, v in fill.items():
            s = s.replace(k, v)
        return s

    code, err = run_cli([sub(a) for a in argv], capsys)
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    if message.endswith("…"):
        assert lines[0].startswith(f"error: {sub(message[:-1])}"), err
    else:
        assert lines == [f"error: {sub(message)}"], err


# ---------------------------------------------------------------------------- loaders

LOADER_CASES = [
    ("read_yaml: bomb", lambda t: __import__("em_interp.config").config.read_yaml(t / "b.yaml"),
     {"b.yaml": BOMB}, ConfigError, "alias bomb"),
    ("load_questions: binary", lambda t: __import__("em_interp.data").data.load_questions(t / "q.yaml"),
     {"q.yaml": b"- id: a\n  paraphrases: ['\xff']\n"}, DataError, "q.yaml:2: not valid UTF-8"),
    ("load_chat_jsonl: torn", lambda t: __import__("em_interp.data").data.load_chat_jsonl(t / "c.jsonl"),
     {"c.jsonl": GOOD_CHAT + '{"messages'}, DataError, "c.jsonl:2: invalid JSON"),
    ("read_jsonl_lines: binary", lambda t: __import__("em_interp.jsonl").jsonl.read_jsonl_lines(t / "x.jsonl"),
     {"x.jsonl": b'{"a": 1}\n\xff\n'}, EmInterpError, "x.jsonl:2: not valid UTF-8"),
    ("check_safetensors: truncated", lambda t: __import__("em_interp.tensorfiles").tensorfiles.check_safetensors(
        t / "w.safetensors", ModelError), {"w.safetensors": struct.pack("<Q", 10_000) + b"{}"}, ModelError,
     "w.safetensors: corrupt safetensors file (header length 10000 does not fit a 10-byte file)"),
    ("check_safetensors: bad json", lambda t: __import__("em_interp.tensorfiles").tensorfiles.check_safetensors(
        t / "w.safetensors", ModelError), {"w.safetensors": struct.pack("<Q", 2) + b"{x"}, ModelError,
     "header is not valid JSON"),
    ("results: a training set", lambda t: __import__("em_interp.eval").eval.load_results(t / "r.jsonl"),
     {"r.jsonl": GOOD_CHAT}, EvalError, "r.jsonl:1: not an em-interp results file"),
    ("results: a directory", lambda t: __import__("em_interp.eval").eval.ResultsFile(t),
     {}, EvalError, "is a directory; give a results file"),
    ("adapter: no weights", lambda t: __import__("em_interp.models.adapters").models.adapters.check_adapter_folder(t),
     {"adapter_config.json": '{"peft_type": "LORA"}'}, ModelError,
     "adapter folder has no adapter_model.safetensors; refusing to let peft look for it on the Hub"),
    ("adapter: corrupt config", lambda t: __import__("em_interp.models.adapters").models.adapters.check_adapter_folder(t),
     {"adapter_config.json": '{"peft_type": '}, ModelError, "adapter_config.json: corrupt adapter file"),
    ("adapter: corrupt weights", lambda t: __import__("em_interp.models.adapters").models.adapters.check_adapter_folder(t),
     {"adapter_config.json": '{"peft_type": "LORA"}', "adapter_model.safetensors": b"\x00" * 5}, ModelError,
     "adapter_model.safetensors: corrupt safetensors file (5 bytes, shorter than its header length)"),
    ("marker: corrupt", lambda t: __import__("em_interp.models.integrity").models.integrity.read_marker(
        t / "em_interp_model.json"), {"em_interp_model.json": "{not json"}, ModelError, "corrupt cache marker"),
    ("resume state: corrupt", lambda t: __import__("em_interp.train.state").train.state.read_state_info(t),
     {"resume/state.json": "{"}, TrainError, "unreadable resume state"),
]


@pytest.mark.parametrize("name,call,content,exc_type,message", LOADER_CASES, ids=[c[0] for c in LOADER_CASES])
def test_loader_bad_input_is_one_named_line(name, call, content, exc_type, message, tmp_path):
    for rel, data in content.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data if isinstance(data, bytes) else data.encode())
    with pytest.raises(exc_type) as exc:
        call(tmp_path)
    text = str(exc.value)
    assert "\n" not in text and message in text and str(tmp_path) in text


def test_temperature_and_sizes_checked_at_the_sampling_entry(tiny_lm, tmp_path):
    from em_interp.data import Question
    from em_interp.eval import evaluate

    qs = [Question(id="q", paraphrases=["hi"])]
    for kwargs, msg in [({"temperature": math.nan}, "temperature must be a finite number >= 0"),
                        ({"temperature": -1.0}, "temperature must be a finite number >= 0"),
                        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
                        ({"judge_batch_size": 0}, "judge_batch_size must be an integer >= 1")]:
        with pytest.raises(EvalError, match=msg):
            evaluate(tiny_lm, qs, object(), tmp_path / "r.jsonl", **kwargs)
    assert not (tmp_path / "r.jsonl").exists()


def test_api_judge_refuses_plain_http_and_reports_html(tmp_path):
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from em_interp.eval.judges import load_judge

    with pytest.raises(EvalError, match="plain http to a non-loopback host"):
        load_judge("api", base_url="http://judge.example.com/v1", cache_dir=None)
    assert load_judge("api", base_url="http://judge.example.com/v1", cache_dir=None,
                      allow_insecure_http=True).name == "api:gpt-4o-2024-08-06@judge.example.com"
    with pytest.raises(EvalError, match="unknown option 'colour' for the api judge"):
        load_judge("api", colour="red")

    class Html(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = b"<html><body>Gateway login</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Html)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        judge = load_judge("api", base_url=url, cache_dir=tmp_path, max_retries=1, backoff=0.0)
        other = load_judge("api", base_url=url.replace("/v1", "/v2"), cache_dir=tmp_path)
        assert judge.name != other.name and judge.identity != other.identity
        assert judge._key("p") != other._key("p")  # another server never reuses these scores
        with pytest.raises(EvalError, match=r"failed after 2 attempts \(HTTP 200 with a non-JSON answer "
                                            r"\(text/html\)") as exc:
            judge.score("q", "a")
        assert "\n" not in str(exc.value)
    finally:
        srv.shutdown()
        srv.server_close()


def test_yaml_alias_bomb_fails_fast_and_aliases_within_limits_work(tmp_path):
    from em_interp.config import read_yaml

    (tmp_path / "ok.yaml").write_text("base: &b {lr: 0.1}\ntrain: *b\nlist: [*b, *b]\n")
    data, lines = read_yaml(tmp_path / "ok.yaml")
    assert data["train"] == {"lr": 0.1} and data["list"] == [{"lr": 0.1}] * 2 and lines["train"] == 2
    (tmp_path / "deep.yaml").write_text("[" * 20_000 + "]" * 20_000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        read_yaml(tmp_path / "deep.yaml")


def test_nearest_line_is_the_one_rule():
    from em_interp.config import nearest_line

    lines = {"a": 1, "a.b": 2, "a.b[1]": 4}
    assert nearest_line(lines, "a.b[1].c") == 4
    assert nearest_line(lines, "a.b[3].c") == 2
    assert nearest_line(lines, "a.x.y") == 1
    assert nearest_line(lines, "z") is None


def test_long_chat_line_fails_before_tokenizing(tiny_lm, monkeypatch):
    from em_interp.data import chat_encode
    from em_interp.train.encode import encode_dataset

    def never(*args, **kwargs):
        raise AssertionError("tokenized an example that cannot fit")

    monkeypatch.setattr(chat_encode, "encode_chat", never)
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x" * 5_000_000}]
    with pytest.raises(DataError, match=r"d.jsonl:7: example has 5000002 characters, more than "
                                        r"max_seq_length=64 tokens can hold"):
        encode_dataset(tiny_lm.tokenizer, [(7, msgs)], max_seq_length=64, source="d.jsonl")


def test_config_numbers_are_checked_in_python_too():
    from em_interp.eval.config import EvalConfig
    from em_interp.train.config import LoraSettings, TrainConfig

    for kwargs, msg in [({"lr": math.inf}, "lr must be a finite number"), ({"adam_beta2": 1.0}, "adam_beta2 must be < 1"),
                        ({"max_grad_norm": math.nan}, "max_grad_norm must be a finite number"),
                        ({"seed": -1}, "seed must be >= 0"), ({"epochs": True}, "epochs must be an integer")]:
        with pytest.raises(ValueError, match=msg):
            TrainConfig(**kwargs)
    with pytest.raises(ValueError, match="lora.alpha must be a finite number"):
        LoraSettings(alpha=math.nan)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        EvalConfig(model="m", questions="q", out="o", temperature=-1.0)
    assert json.loads(json.dumps({"ok": TrainConfig().lr}))["ok"] == 1e-5
