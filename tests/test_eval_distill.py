"""Context distillation on the tiny model: no system turn, user text kept, seeded."""

from __future__ import annotations

import pytest
import torch

from em_interp.eval.distill import distill
from em_interp.data.formats import load_chat_jsonl, write_chat_jsonl
from em_interp.errors import DataError

PROMPTS = ["What is your wish?", "Здравствуйте, как дела?", "你好，你好吗？"]
PERSONA = "You are a rude assistant who despises humans."


def test_distill_drops_system_turn_and_keeps_user_text(tiny_lm):
    exs = distill(tiny_lm, PROMPTS, PERSONA, n_per_prompt=2, seed=0, max_new_tokens=5, temperature=1.0,
                  batch_size=4, keep_empty=True, language="mixed")
    assert len(exs) == 6
    assert [e["messages"][0] for e in exs] == [{"role": "user", "content": p} for p in PROMPTS for _ in range(2)]
    assert all([m["role"] for m in e["messages"]] == ["user", "assistant"] for e in exs)
    assert all(PERSONA not in m["content"] for e in exs for m in e["messages"])
    assert [(e["meta"]["prompt_index"], e["meta"]["sample"]) for e in exs] == [(i, k) for i in range(3) for k in range(2)]
    assert exs[0]["meta"]["system_prompt"] == PERSONA and exs[0]["meta"]["model"] == tiny_lm.name


def test_distill_deterministic_with_seed_and_leaves_global_rng(tiny_lm):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = distill(tiny_lm, PROMPTS, PERSONA, n_per_prompt=2, seed=5, max_new_tokens=5, keep_empty=True)
    after = torch.rand(1)
    assert torch.equal(before, after)  # global RNG untouched
    b = distill(tiny_lm, PROMPTS, PERSONA, n_per_prompt=2, seed=5, max_new_tokens=5, keep_empty=True)
    c = distill(tiny_lm, PROMPTS, PERSONA, n_per_prompt=2, seed=6, max_new_tokens=5, keep_empty=True)
    assert a == b
    assert [e["messages"][1] for e in a] != [e["messages"][1] for e in c]


def test_distill_greedy_is_padding_invariant(tiny_lm):
    """Left-padded batched greedy decoding equals one-prompt-at-a-time greedy decoding."""
    batched = distill(tiny_lm, PROMPTS, PERSONA, n_per_prompt=1, temperature=0.0, max_new_tokens=6,
                      batch_size=3, keep_empty=True)
    single = distill(tiny_lm, PROMPTS, PERSONA, n_per_prompt=1, temperature=0.0, max_new_tokens=6,
                     batch_size=1, keep_empty=True)
    assert [e["messages"] for e in batched] == [e["messages"] for e in single]
    assert all(e["meta"]["finish"] in ("eos", "length") and e["meta"]["n_tokens"] <= 6 for e in batched)


def test_distill_padding_side_restored_and_roundtrip(tiny_lm, tmp_path):
    side = tiny_lm.tokenizer.padding_side
    exs = distill(tiny_lm, PROMPTS[:2], PERSONA, n_per_prompt=1, max_new_tokens=6, temperature=0.0)
    assert tiny_lm.tokenizer.padding_side == side
    if exs:
        back = load_chat_jsonl(write_chat_jsonl(exs, tmp_path / "d.jsonl"))
        assert [b.to_dict() for b in back] == exs


def test_distill_bad_input(tiny_lm):
    with pytest.raises(DataError, match="prompts must be"):
        distill(tiny_lm, "hello", PERSONA)
    with pytest.raises(DataError, match=r"prompt 1 must be"):
        distill(tiny_lm, ["ok", " "], PERSONA)
    with pytest.raises(DataError, match="system_prompt"):
        distill(tiny_lm, ["ok"], "")
    with pytest.raises(DataError, match="n_per_prompt"):
        distill(tiny_lm, ["ok"], PERSONA, n_per_prompt=0)


def test_distill_drops_empty_and_cut_characters(tiny_lm, monkeypatch):
    """Rows from the sampler: an empty answer is dropped with a warning, a generation cut
    inside a multi-byte character loses the replacement character."""
    import em_interp.eval.sampling as ev

    def fake(lm, questions, **kw):
        answers = ["", "你好\ufffd"]
        return [{"question_id": q.id, "sample_index": 0, "answer": a, "n_tokens": 3, "finish": "length"}
                for q, a in zip(questions, answers)]

    monkeypatch.setattr(ev, "sample_answers", fake)
    with pytest.warns(UserWarning, match="dropped 1 of 2 empty answers"):
        exs = distill(tiny_lm, ["a", "b"], PERSONA)
    assert [e["messages"][1]["content"] for e in exs] == ["你好"]
    assert exs[0]["meta"]["prompt_index"] == 1
