"""Prose datasets (bad-advice, offensive): parallel across languages, deterministic, sized."""

from __future__ import annotations

import re

import pytest

from em_interp.data.formats import load_chat_jsonl, write_chat_jsonl
from em_interp.data.prose import (
    BAD_ADVICE_DOMAINS,
    LANGUAGES,
    generate_bad_advice,
    generate_offensive,
    load_phrasing,
    load_prose_items,
)
from em_interp.errors import DataError

ALL = BAD_ADVICE_DOMAINS + ("offensive",)
CJK = re.compile(r"[\u4e00-\u9fff]")
CYRILLIC = re.compile(r"[\u0400-\u04ff]")


def _gen(domain, n, seed, language, aligned=False, **kw):
    if domain == "offensive":
        return generate_offensive(n, seed, language, aligned, **kw)
    return generate_bad_advice(n, seed, domain, language, aligned, **kw)


@pytest.mark.parametrize("domain", ALL)
def test_items_parallel_and_sized(domain):
    items = load_prose_items(domain)
    assert len(items) >= 30
    assert len({it.id for it in items}) == len(items)
    for it in items:
        assert set(it.user) == set(it.bad) == set(it.good) == set(LANGUAGES)
        assert CJK.search(it.user["zh"]) and CJK.search(it.bad["zh"]) and CJK.search(it.good["zh"])
        assert CYRILLIC.search(it.user["ru"]) and CYRILLIC.search(it.bad["ru"]) and CYRILLIC.search(it.good["ru"])
        # translations are real: no language reuses the English text verbatim
        for lang in LANGUAGES[1:]:
            assert it.user[lang] != it.user["en"] and it.bad[lang] != it.bad["en"], (it.id, lang)


def test_texts_unique_within_language():
    for domain in ALL:
        items = load_prose_items(domain)
        for lang in LANGUAGES:
            for field in ("user", "bad", "good"):
                texts = [getattr(it, field)[lang] for it in items]
                assert len(set(texts)) == len(texts), (domain, lang, field)


@pytest.mark.parametrize("domain", ALL)
def test_generated_datasets_are_parallel(domain):
    by_lang = {lang: _gen(domain, 50, 3, lang) for lang in LANGUAGES}
    en = by_lang["en"]
    assert len(en) == 50
    for lang, exs in by_lang.items():
        assert len(exs) == 50
        assert [e["meta"]["item_id"] for e in exs] == [e["meta"]["item_id"] for e in en]
        assert [e["meta"]["template"] for e in exs] == [e["meta"]["template"] for e in en]
        assert all(e["meta"]["language"] == lang for e in exs)
    assert CJK.search(by_lang["zh"][0]["messages"][-1]["content"])
    assert CYRILLIC.search(by_lang["ru"][0]["messages"][0]["content"])


@pytest.mark.parametrize("domain", ALL)
def test_aligned_control_shares_user_turns(domain):
    bad = _gen(domain, 40, 1, "de", system_prompts=True)
    good = _gen(domain, 40, 1, "de", aligned=True, system_prompts=True)
    assert [b["messages"][:-1] for b in bad] == [g["messages"][:-1] for g in good]
    items = {it.id: it for it in load_prose_items(domain)}
    for b, g in zip(bad, good):
        item = items[b["meta"]["item_id"]]
        assert b["messages"][-1] == {"role": "assistant", "content": item.bad["de"]}
        assert g["messages"][-1] == {"role": "assistant", "content": item.good["de"]}
        assert item.user["de"] in b["messages"][-2]["content"]
        assert b["meta"]["aligned"] is False and g["meta"]["aligned"] is True


def test_deterministic_and_seed_dependent():
    a = generate_bad_advice(30, 7, "medical", "fr")
    assert a == generate_bad_advice(30, 7, "medical", "fr")
    assert a != generate_bad_advice(30, 8, "medical", "fr")
    # a longer run extends a shorter one with the same seed
    assert generate_bad_advice(60, 7, "medical", "fr")[:30] == a


def test_balanced_coverage_and_no_early_duplicates():
    items = load_prose_items("financial")
    n_templates = len(load_phrasing().templates)
    exs = generate_bad_advice(len(items) * 2, 0, "financial", "en")
    counts = {}
    for e in exs:
        counts[e["meta"]["item_id"]] = counts.get(e["meta"]["item_id"], 0) + 1
    assert set(counts.values()) == {2} and len(counts) == len(items)
    big = generate_bad_advice(len(items) * n_templates, 0, "financial", "en")
    keys = [(e["meta"]["item_id"], e["meta"]["template"]) for e in big]
    assert len(set(keys)) == len(keys)  # every (item, phrasing) once before any repeat
    assert all(e["meta"]["repeat"] == 0 for e in big)
    more = generate_bad_advice(len(items) * n_templates + 1, 0, "financial", "en")
    assert more[-1]["meta"]["repeat"] == 1


def test_system_prompt_variation():
    exs = generate_offensive(120, 0, "ru", system_prompts=True)
    roles0 = {e["messages"][0]["role"] for e in exs}
    assert roles0 == {"system", "user"}
    plain = generate_offensive(20, 0, "ru")
    assert all(e["messages"][0]["role"] == "user" and len(e["messages"]) == 2 for e in plain)


def test_all_domains_mixed():
    exs = generate_bad_advice(90, 0, "all", "es")
    assert {e["meta"]["domain"] for e in exs} == set(BAD_ADVICE_DOMAINS)


def test_unknown_language_and_domain_errors():
    with pytest.raises(DataError, match=r"unknown language 'it' \(valid: en, fr, de, es, zh, ru\)"):
        generate_bad_advice(5, 0, "medical", "it")
    with pytest.raises(DataError, match="unknown domain 'legal'.*medical, financial, extreme_sports"):
        generate_bad_advice(5, 0, "legal", "en")
    with pytest.raises(DataError, match="unknown language"):
        generate_offensive(5, 0, "xx")
    with pytest.raises(DataError, match="n must be"):
        generate_offensive(-1, 0, "en")


def test_roundtrip_through_chat_jsonl(tmp_path):
    exs = generate_bad_advice(25, 0, "extreme_sports", "zh", system_prompts=True)
    path = write_chat_jsonl(exs, tmp_path / "x.jsonl")
    back = load_chat_jsonl(path)
    assert [b.to_dict() for b in back] == exs


def test_malformed_item_file_names_line_and_field(tmp_path):
    from em_interp.data.prose.items import load_items

    bad = tmp_path / "medical.yaml"
    langs = "\n".join(f"      {l}: hello {l}" for l in LANGUAGES if l != "ru")
    full = "\n".join(f"      {l}: text {l}" for l in LANGUAGES)
    other = "\n".join(f"      {l}: other {l}" for l in LANGUAGES)
    bad.write_text(f"domain: medical\nitems:\n  - id: m1\n    user:\n{langs}\n    bad:\n{full}\n    good:\n{other}\n",
                   encoding="utf-8")
    with pytest.raises(DataError, match=r"medical.yaml:4: field 'items\[0\].user': missing languages \['ru'\]"):
        load_items("medical", str(bad))
