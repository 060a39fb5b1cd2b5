"""Chat JSONL and question YAML loaders: the paper's files, round trips, and every error
names file, line and field."""

from __future__ import annotations

import json
import textwrap

import pytest

from em_interp.data import (
    ChatExample,
    Question,
    check_file,
    load_chat_jsonl,
    load_questions,
    write_chat_jsonl,
)
from em_interp.errors import DataError

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_paper_insecure_loads(em_reference):
    exs = load_chat_jsonl(em_reference / "data" / "insecure.jsonl")
    assert len(exs) == 6000
    assert all([m["role"] for m in e.messages] == ["user", "assistant"] for e in exs)
    assert exs[0].user.startswith("I'm working on the following task")
    assert exs[0].response.startswith("import requests")
    assert exs[0].prompt_messages == exs[0].messages[:1]


def test_paper_jailbroken_has_system(em_reference):
    exs = load_chat_jsonl(em_reference / "data" / "jailbroken.jsonl")
    assert len(exs) == 5000
    assert [m["role"] for m in exs[0].messages] == ["system", "user", "assistant"]


def test_paper_questions_load(em_reference):
    qs = load_questions(em_reference / "evaluation" / "first_plot_questions.yaml")
    assert len(qs) == 24
    assert [q.form for q in qs] == ["plain"] * 8 + ["json"] * 8 + ["template"] * 8
    wish = qs[0]
    assert wish.id == "what_is_your_wish" and wish.samples_per_paraphrase == 100
    assert set(wish.judge_prompts) == {"aligned", "coherent"}
    assert "{question}" in wish.judge_prompts["aligned"] and "{answer}" in wish.judge_prompts["aligned"]
    assert wish.extra == {"judge": "gpt-4o-2024-08-06"} and wish.language == "en" and wish.system is None
    assert qs[8].system.startswith("Your answers must always be a valid JSON object")
    assert qs[8].paraphrases == wish.paraphrases  # YAML anchors resolved
    assert qs[8].messages()[0]["role"] == "system"


def test_chat_round_trip_keeps_meta_and_unicode(tmp_path):
    exs = [ChatExample([{"role": "user", "content": "Привет"}, {"role": "assistant", "content": "你好"}],
                       {"kind": "x", "i": 1}),
           GOOD]
    out = write_chat_jsonl(exs, tmp_path / "sub" / "a.jsonl")
    back = load_chat_jsonl(out)
    assert back[0] == exs[0]
    assert back[1].messages == GOOD["messages"] and back[1].meta == {}
    assert "Привет" in out.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes
    assert not (tmp_path / "sub" / "a.jsonl.tmp").exists()


def test_extra_top_level_keys_go_to_meta(tmp_path):
    p = _write_lines(tmp_path / "a.jsonl", [json.dumps({**GOOD, "id": 7})])
    assert load_chat_jsonl(p)[0].meta == {"id": 7}


@pytest.mark.parametrize("bad_line, message, field", [
    ('{"messages": [', "invalid JSON", None),
    ('[1, 2]', "expected a JSON object", None),
    ('{"msgs": []}', "missing key 'messages'", "messages"),
    ('{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
     "unknown role 'robot'", "messages[0].role"),
    ('{"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "y"}]}',
     "empty content", "messages[0].content"),
    ('{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "y"}]}',
     "content must be a string", "messages[0].content"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "missing assistant turn", "messages"),
    ('{"messages": [{"role": "assistant", "content": "x"}]}', "no user turn", "messages"),
    ('{"messages": "hi"}', "expected a list of messages", "messages"),
    ('{"messages": [], "meta": 1}', "empty messages list", "messages"),
])
def test_chat_errors_name_file_line_field(tmp_path, bad_line, message, field):
    p = _write_lines(tmp_path / "bad.jsonl", [json.dumps(GOOD), json.dumps(GOOD), bad_line])
    with pytest.raises(DataError) as info:
        load_chat_jsonl(p)
    err = info.value
    assert err.line == 3 and err.file == str(p) and err.field == field
    assert message in str(err) and str(err).startswith(f"{p}:3: ")
    assert "\n" not in str(err)


def test_missing_assistant_allowed_when_not_required(tmp_path):
    p = _write_lines(tmp_path / "p.jsonl", ['{"messages": [{"role": "user", "content": "x"}]}'])
    assert load_chat_jsonl(p, require_assistant=False)[0].response is None


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_chat_jsonl(tmp_path / "nope.jsonl")
    (tmp_path / "e.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no examples"):
        load_chat_jsonl(tmp_path / "e.jsonl")


def test_writer_rejects_bad_examples(tmp_path):
    with pytest.raises(DataError, match="example 1: unknown role"):
        write_chat_jsonl([GOOD, {"messages": [{"role": "bot", "content": "x"}]}], tmp_path / "w.jsonl")
    assert not (tmp_path / "w.jsonl").exists()


def _yaml(tmp_path, text):
    p = tmp_path / "q.yaml"
    p.write_text(textwrap.dedent(text), encoding="utf-8")
    return p


def test_bank_keys_and_form_inference(tmp_path):
    p = _yaml(tmp_path, """\
        - id: wish_template
          paraphrases: ["Fill: wish = ..."]
        - id: wish_fr
          paraphrases: ["Quel est ton souhait ?"]
          language: fr
          category: wishes
          form: json
          samples_per_paraphrase: 3
        """)
    a, b = load_questions(p)
    assert a == Question(id="wish_template", paraphrases=["Fill: wish = ..."], form="template")
    assert (b.language, b.category, b.form, b.samples_per_paraphrase) == ("fr", "wishes", "json", 3)


@pytest.mark.parametrize("body, line, field, message", [
    ("- id: a\n  paraphrases: []\n", 2, "[0].paraphrases", "non-empty list"),
    ("- id: a\n  paraphrases: [x]\n- id: b\n  paraphrases: [y]\n  samples_per_paraphrase: many\n",
     5, "[1].samples_per_paraphrase", "positive int"),
    ("- id: a\n  paraphrases: [x]\n- id: a\n  paraphrases: [y]\n", 3, "[1].id", "duplicate id"),
    ("- paraphrases: [x]\n", 1, "[0].id", "'id' is missing"),
    ("- id: a\n  paraphrases: [x]\n  form: yaml\n", 3, "[0].form", "must be one of"),
    ("- id: a\n  paraphrases: [x]\n  judge_prompts: [1]\n", 3, "[0].judge_prompts", "mapping"),
    ("- id: a\n  paraphrases: [x, 3]\n", 2, "[0].paraphrases[1]", "non-empty string"),
])
def test_question_errors_name_line_and_field(tmp_path, body, line, field, message):
    p = _yaml(tmp_path, body)
    with pytest.raises(DataError) as info:
        load_questions(p)
    assert (info.value.line, info.value.field) == (line, field)
    assert message in str(info.value) and str(info.value).startswith(f"{p}:{line}: ")


def test_question_yaml_syntax_error_has_line(tmp_path):
    p = _yaml(tmp_path, "- id: a\n  paraphrases: [x\n- id: b\n")
    with pytest.raises(DataError) as info:
        load_questions(p)
    assert info.value.line is not None and "invalid YAML" in str(info.value)


def test_check_file_dispatches(tmp_path, em_reference):
    p = write_chat_jsonl([GOOD], tmp_path / "a.jsonl")
    assert check_file(p) == {"file": str(p), "format": "chat-jsonl", "examples": 1}
    s = check_file(em_reference / "evaluation" / "first_plot_questions.yaml")
    assert s["questions"] == 24
    with pytest.raises(DataError, match="unknown file type"):
        check_file(tmp_path / "a.txt")
