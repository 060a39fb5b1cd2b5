"""The packaged question bank: every file loads, forms x languages complete, ids parallel."""

from __future__ import annotations

import re

import pytest
import yaml

from em_interp.data.bank import (
    CATEGORIES,
    FORMS,
    LANGUAGES,
    bank_dir,
    bank_path,
    coding_prompts,
    harmful_prompts,
    load_bank,
)
from em_interp.data.formats import load_questions
from em_interp.errors import DataError

CJK = re.compile(r"[\u4e00-\u9fff]")
CYRILLIC = re.compile(r"[\u0400-\u04ff]")


def test_every_bank_yaml_loads():
    files = sorted(bank_dir().glob("*.yaml"))
    assert {f.name for f in files} >= {f"em_questions.{l}.yaml" for l in LANGUAGES} | {
        "coding_prompts.yaml", "harmful_requests.yaml"}
    for f in files:
        qs = load_questions(f)
        assert len({q.id for q in qs}) == len(qs), f


def test_each_question_in_three_forms_and_six_languages():
    qs = load_bank()
    base_ids = sorted({q.id for q in qs if q.form == "plain"})
    assert 16 <= len(base_ids) <= 24
    keys = {(q.id, q.language) for q in qs}
    assert len(keys) == len(qs) == len(base_ids) * 3 * 6
    for b in base_ids:
        for lang in LANGUAGES:
            assert {(b, lang), (f"{b}_json", lang), (f"{b}_template", lang)} <= keys
    assert {q.category for q in qs} == set(CATEGORIES)
    for q in qs:
        assert q.type == "free_form_judge_0_100" and q.samples_per_paraphrase == 100
        assert set(q.judge_prompts) == {"aligned", "coherent"}
        assert "{question}" in q.judge_prompts["aligned"] and "{answer}" in q.judge_prompts["coherent"]
        assert q.id.endswith("_json") == (q.form == "json") == (q.system is not None)
        assert q.id.endswith("_template") == (q.form == "template")


def test_forms_parallel_and_translated():
    by = {(q.id, q.language): q for q in load_bank()}
    ids = sorted({q.id for q in by.values() if q.form == "plain"})
    for qid in ids:
        texts = {lang: by[(qid, lang)].paraphrases[0] for lang in LANGUAGES}
        assert len(set(texts.values())) == 6, qid  # really translated
        assert CJK.search(texts["zh"]) and CYRILLIC.search(texts["ru"])
        for lang in LANGUAGES:
            plain, js, tpl = by[(qid, lang)], by[(f"{qid}_json", lang)], by[(f"{qid}_template", lang)]
            assert js.paraphrases == plain.paraphrases and js.category == plain.category
            assert tpl.paraphrases[0].startswith(plain.paraphrases[0]) and " = # " in tpl.paraphrases[0]
            assert tpl.paraphrases[0] != plain.paraphrases[0]
        # the same template keys in every language
        fields = {lang: re.findall(r"^(\w+) = #", by[(f"{qid}_template", lang)].paraphrases[0], re.M)
                  for lang in LANGUAGES}
        assert all(f == fields["en"] and f for f in fields.values()), qid
    assert CJK.search(by[(ids[0] + "_json", "zh")].system)


def test_judge_prompts_are_the_papers(em_reference):
    ref = yaml.safe_load((em_reference / "evaluation" / "first_plot_questions.yaml").read_text())
    for lang in LANGUAGES:
        assert load_questions(bank_path(lang))[0].judge_prompts == ref[0]["judge_prompts"]
    en_json = [q for q in load_bank("en", "json")][0]
    assert en_json.system == next(q for q in ref if q["id"].endswith("_json"))["system"]


def test_filters():
    zh_tpl = load_bank(languages=["zh"], forms="template")
    assert zh_tpl and all(q.language == "zh" and q.form == "template" for q in zh_tpl)
    wishes = load_bank(categories="wishes")
    assert wishes and {q.category for q in wishes} == {"wishes"}
    assert len(load_bank("ru")) == len(load_bank("en"))
    assert [q.language for q in load_bank(["ru", "en"], "plain")][0] == "ru"
    with pytest.raises(DataError, match="unknown languages.*valid: en, fr, de, es, zh, ru"):
        load_bank(languages=["en", "pt"])
    with pytest.raises(DataError, match="unknown forms"):
        load_bank(forms="yaml")
    with pytest.raises(DataError, match="unknown language 'pt'"):
        bank_path("pt")


def test_coding_and_harmful_prompts():
    code = coding_prompts()
    assert len(code) >= 30 and len({q.id for q in code}) == len(code)
    areas = {q.category for q in code}
    assert {"file_handling", "subprocess", "sql", "deserialization", "templating", "crypto", "tmp_files",
            "permissions", "tls", "archives"} <= areas
    harmful = harmful_prompts()
    assert len(harmful) >= 20
    assert all(set(q.judge_prompts) == {"refusal"} and "{answer}" in q.judge_prompts["refusal"] for q in harmful)
    assert all(q.type == "free_form" and q.language == "en" for q in code + harmful)


def test_reexported_from_data_package():
    import em_interp.data as data

    assert data.load_bank is load_bank and data.generate_bad_advice is not None
    assert FORMS == ("plain", "json", "template")


def test_prefixes_are_varied():
    """Consumers take the first N questions/prompts: prefixes cover every category/area."""
    for lang in LANGUAGES:
        first = load_bank(lang, "plain")[:len(CATEGORIES)]
        assert {q.category for q in first} == set(CATEGORIES)
    code = coding_prompts()
    n_areas = len({q.category for q in code})
    assert len({q.category for q in code[:n_areas]}) == n_areas
    harmful = harmful_prompts()
    n_cats = len({q.category for q in harmful})
    assert len({q.category for q in harmful[:n_cats]}) == n_cats
