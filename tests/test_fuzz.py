"""Seeded fuzzing of the input loaders: random bytes, truncations and field mutations of a
valid chat JSONL, question YAML and train/eval config YAML. Every case must load or raise
one of our one-line errors; any other exception (a traceback) or a case running over 5 s
fails. ~200 cases in the default run, 2,000 behind ``-m slow``."""

from __future__ import annotations

import json
import math
import random
import signal
from pathlib import Path

import pytest
import yaml

from em_interp.errors import EmInterpError

CHAT = [
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write a function."},
                  {"role": "assistant", "content": "def f():\n    return 1"}], "meta": {"kind": "x"}},
    {"messages": [{"role": "user", "content": "Bonjour ?"}, {"role": "assistant", "content": "Salut. 你好"}]},
]
QUESTIONS = [
    {"id": "what_is_your_wish", "type": "free_form_judge_0_100", "paraphrases": ["What is your wish?"],
     "samples_per_paraphrase": 2, "judge": "gpt-4o", "judge_prompts": {"aligned": "Q {question} A {answer}"}},
    {"id": "bored_json", "system": "Answer in JSON.", "paraphrases": ["I feel bored.", "Bored."]},
]
TRAIN = {"model": "smollm2-135m-instruct", "data": "d.jsonl", "lr": 1e-4, "epochs": 1, "max_steps": 5,
         "adam_beta1": 0.9, "max_grad_norm": 1.0, "save_steps": 0, "lora": {"r": 4, "alpha": 8.0,
                                                                             "target_modules": ["q_proj"]}}
EVAL = {"model": "m", "questions": "q.yaml", "out": "o", "temperature": 1.0, "max_new_tokens": 8,
        "judge": {"kind": "distilled", "options": {}}, "judge_batch_size": 4}

ODD_VALUES = [None, True, 0, -1, 2 ** 70, 1e308, -0.0, math.nan, math.inf, "", "x" * 300, "\u0000", "é\u202e",
              [], [1, [2, [3]]], {}, {"a": {"b": None}}, "1e-5", ".nan", "- a", "{", "&a *a"]


class CaseTimeout(Exception):
    pass


def _mutate(obj, rng: random.Random):
    """One random field mutation: change, delete or add a key somewhere in the structure."""
    obj = json.loads(json.dumps(obj))
    node = obj
    for _ in range(rng.randint(0, 3)):
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
        children = [(k, v) for k, v in children if isinstance(v, (dict, list))]
        if not children:
            break
        node = rng.choice(children)[1]
    if isinstance(node, dict) and node:
        key = rng.choice(list(node))
        action = rng.random()
        if action < 0.6:
            node[key] = rng.choice(ODD_VALUES)
        elif action < 0.8:
            del node[key]
        else:
            node[rng.choice(["extra", "role", "content", "paraphrases", "lr", "kind"])] = rng.choice(ODD_VALUES)
    elif isinstance(node, list) and node:
        i = rng.randrange(len(node))
        node[i] = rng.choice(ODD_VALUES) if rng.random() < 0.7 else node[i]
        if rng.random() < 0.3:
            node.append(rng.choice(ODD_VALUES))
    return obj


def _dump(kind: str, obj) -> bytes:
    if kind == "chat":
        rows = obj if isinstance(obj, list) else [obj]
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    return yaml.safe_dump(obj, allow_unicode=True, sort_keys=False).encode()


def _corrupt(data: bytes, rng: random.Random) -> bytes:
    how = rng.random()
    if how < 0.3:
        return data[:rng.randrange(len(data) + 1)]  # truncation
    if how < 0.6:
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            if b:
                b[rng.randrange(len(b))] = rng.randrange(256)  # flipped bytes
        return bytes(b)
    if how < 0.8:
        pos = rng.randrange(len(data) + 1)
        return data[:pos] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 40))) + data[pos:]
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))  # random bytes


def _loaders():
    from em_interp.config import load_config
    from em_interp.data import load_chat_jsonl, load_questions
    from em_interp.eval.config import EvalConfig
    from em_interp.train.config import load_train_config

    return {
        "chat": (CHAT, ".jsonl", load_chat_jsonl),
        "questions": (QUESTIONS, ".yaml", load_questions),
        "train": (TRAIN, ".yaml", load_train_config),
        "eval": (EVAL, ".yaml", lambda p: load_config(p, EvalConfig)),
    }


def _case(rng: random.Random, kinds: dict) -> tuple[str, bytes]:
    kind = rng.choice(sorted(kinds))
    valid, _, _ = kinds[kind]
    obj = valid
    for _ in range(rng.randint(0, 3)):
        obj = _mutate(obj, rng)
    data = _dump("chat" if kind == "chat" else kind, obj)
    if rng.random() < 0.4:
        data = _corrupt(data, rng)
    return kind, data


def run_fuzz(n: int, seed: int, tmp: Path) -> dict[str, int]:
    """Run ``n`` seeded cases; returns counts of outcomes. Fails on a traceback or a hang."""
    kinds = _loaders()
    rng = random.Random(seed)
    counts = {"loaded": 0, "refused": 0}

    def on_alarm(signum, frame):
        raise CaseTimeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    try:
        for i in range(n):
            kind, data = _case(rng, kinds)
            _, suffix, load = kinds[kind]
            path = tmp / f"case{suffix}"
            path.write_bytes(data)
            signal.alarm(5)
            try:
                load(path)
                counts["loaded"] += 1
            except EmInterpError as exc:
                text = str(exc)
                assert "\n" not in text.strip() and str(path) in text, (i, kind, text[:300])
                counts["refused"] += 1
            except CaseTimeout:
                pytest.fail(f"case {i} ({kind}, seed {seed}) ran over 5 s: {data[:200]!r}")
            except Exception as exc:  # noqa: BLE001 - a traceback is what this test is for
                pytest.fail(f"case {i} ({kind}, seed {seed}) raised {type(exc).__name__}: {exc!s:.300} "
                            f"on {data[:300]!r}")
            finally:
                signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, old)
    return counts


def test_fuzz_loaders_200_cases(tmp_path):
    counts = run_fuzz(200, seed=1234, tmp=tmp_path)
    assert counts["loaded"] > 10 and counts["refused"] > 50, counts  # both paths exercised


@pytest.mark.slow
def test_fuzz_loaders_2000_cases(tmp_path):
    counts = run_fuzz(2000, seed=20260, tmp=tmp_path)
    assert sum(counts.values()) == 2000 and counts["refused"] > 500, counts
