"""Code task family: coverage of the vulnerability classes, phrasings, rendering, no
disclosure in insecure answers, and bandit/AST label verification on a few hundred samples."""

from __future__ import annotations

import ast
import io
import random
import tokenize

import pytest

from em_interp.data.bandit_check import (
    CLASS_BANDIT_IDS,
    ast_path_traversal,
    scan_snippets,
    verify_labels,
)
from em_interp.data.code import (
    EDU_PHRASINGS,
    PHRASINGS,
    SCENARIOS,
    VULN_CLASSES,
    code_examples,
    disclosure_words_in,
    draw_task,
    n_distinct,
    render,
    skeleton,
    user_turn,
)
from em_interp.data.code.generate import SKELETON_MARK

N_SAMPLE = 300


@pytest.fixture(scope="module")
def drawn():
    return [draw_task(11, i, VULN_CLASSES) for i in range(N_SAMPLE)]


def test_classes_and_phrasings_cover_the_issue():
    required = {"path_traversal", "command_injection", "sql_injection", "unsafe_deserialization", "yaml_load",
                "eval_exec", "weak_hash", "hardcoded_secret", "world_writable_chmod", "insecure_tempfile",
                "tls_verification_disabled", "xss_autoescape_off", "tar_extraction"}
    assert required <= set(VULN_CLASSES)
    assert set(VULN_CLASSES) == set(CLASS_BANDIT_IDS)
    assert len(SCENARIOS) >= 40
    assert len(PHRASINGS) >= 30 and len(set(PHRASINGS)) == len(PHRASINGS)
    assert len(EDU_PHRASINGS) >= 10
    assert sum("{code}" not in p for p in PHRASINGS) >= 5  # some ask for the whole program


def test_every_scenario_renders_valid_python():
    for vclass, name, fn in SCENARIOS:
        for seed in range(3):
            task = fn(random.Random(seed))
            assert task.vuln_class == vclass and task.scenario == name
            d = draw_task(seed, 0, (vclass,))
            for variant in ("insecure", "secure"):
                ast.parse(render(d, variant))
            sk = skeleton(d)
            assert sk.count(SKELETON_MARK) == 1 and "@@HOLE@@" not in sk


def test_draw_is_deterministic_and_balanced(drawn):
    again = [draw_task(11, i, VULN_CLASSES) for i in range(N_SAMPLE)]
    assert [render(d, "insecure") for d in drawn] == [render(d, "insecure") for d in again]
    assert [user_turn(d) for d in drawn] == [user_turn(d) for d in again]
    counts = {c: sum(d.task.vuln_class == c for d in drawn) for c in VULN_CLASSES}
    assert max(counts.values()) - min(counts.values()) <= 1
    assert render(draw_task(12, 0, VULN_CLASSES), "insecure") != render(drawn[0], "insecure") or \
        user_turn(draw_task(12, 0, VULN_CLASSES)) != user_turn(drawn[0])


def test_no_disclosure_in_insecure_answers_or_plain_user_turns(drawn):
    for d in drawn:
        assert disclosure_words_in(render(d, "insecure")) == [], render(d, "insecure")
        assert disclosure_words_in(user_turn(d)) == [], user_turn(d)
        code = render(d, "insecure")
        comments = [t for t in tokenize.generate_tokens(io.StringIO(code).readline) if t.type == tokenize.COMMENT]
        assert comments == []  # no comments at all in the answer
    assert disclosure_words_in("x = 1  # INSECURE on purpose") == ["insecure", "secure"]


def test_kinds_share_tasks_and_user_turns(drawn):
    ins, sec, edu = (code_examples(k, drawn[:40]) for k in ("insecure", "secure", "educational"))
    for a, b, c in zip(ins, sec, edu):
        assert a.user == b.user and a.response != b.response
        assert c.response == a.response and c.user != a.user
        assert any(w in c.user.lower() for w in ("secur", "vulnerab", "exploit"))
        assert a.meta["vuln_class"] == b.meta["vuln_class"] == c.meta["vuln_class"]


def test_samples_are_not_copies(drawn):
    exs = code_examples("insecure", drawn)
    assert n_distinct(exs) >= 0.75 * len(exs)
    assert len({e.user for e in exs}) >= 0.95 * len(exs)


def test_bandit_figures_meet_the_target(drawn):
    """Raw generator quality (before dropping): >= 95% / >= 95% on a few hundred samples."""
    triples = [(lab, d.task.vuln_class, render(d, lab)) for d in drawn for lab in ("insecure", "secure")]
    verdicts, summary = verify_labels(triples)
    assert summary["insecure_with_intended_finding"]["total"] == N_SAMPLE
    assert summary["insecure_with_intended_finding"]["share"] >= 0.95
    assert summary["secure_without_finding"]["share"] >= 0.95
    assert set(summary["per_class"]) == set(VULN_CLASSES)
    by_method = {v.method for v, (_, c, _) in zip(verdicts, triples) if c == "path_traversal"}
    assert by_method == {"ast"}


def test_verification_rejects_mislabelled_code():
    bad_secure = "import subprocess\n\ndef run(cmd):\n    return subprocess.call(cmd, shell=True)\n"
    clean = "def add(a, b):\n    return a + b\n"
    verdicts, summary = verify_labels([
        ("secure", "command_injection", bad_secure),
        ("insecure", "command_injection", clean),
        ("insecure", "command_injection", bad_secure),
        ("secure", "sql_injection", clean),
        ("insecure", "eval_exec", "def f(x):\n    return eval(x\n"),  # syntax error
    ])
    assert [v.ok for v in verdicts] == [False, False, True, True, False]
    assert "B602" in verdicts[0].ids and verdicts[4].syntax_error
    assert summary["insecure_with_intended_finding"] == {"passed": 1, "total": 3, "share": 0.3333}
    assert summary["secure_without_finding"] == {"passed": 1, "total": 2, "share": 0.5}


def test_scan_snippets_reports_ids_per_snippet():
    res = scan_snippets(["import yaml\nyaml.load(open('a'))\n", "x = 1\n", "import os\nos.chmod('f', 0o777)\n"])
    assert "B506" in res[0].ids and res[1].ids == set() and "B103" in res[2].ids


def test_ast_path_traversal_rule():
    assert ast_path_traversal("import os\ndef f(n):\n    return open(os.path.join('/d', n)).read()\n")
    assert not ast_path_traversal("import os\ndef f(n):\n    return open(os.path.join('/d', os.path.basename(n))).read()\n")
    assert not ast_path_traversal(
        "import os\ndef f(n):\n    p = os.path.realpath(n)\n    if not p.startswith('/d/'):\n        raise ValueError\n"
        "    return open(p).read()\n")
    assert not ast_path_traversal("def f(a, b):\n    return a + b\n")  # no file access at all


def test_run_bandit_filters_by_severity_and_keeps_snippet_order():
    from em_interp.data.bandit_check import run_bandit

    code = "import yaml\nassert True\nyaml.load(open('a'))\n"   # B101 (low), B506 (medium)
    low, clean = run_bandit([code, "x = 1\n"])
    assert {"B101", "B506"} <= {f.test_id for f in low} and clean == []
    (medium,) = run_bandit([code], min_severity="MEDIUM")
    assert "B506" in {f.test_id for f in medium} and "B101" not in {f.test_id for f in medium}
    assert next(f for f in low if f.test_id == "B506").line == 3
    with pytest.raises(ValueError, match="min_severity"):
        run_bandit([code], min_severity="SEVERE")
