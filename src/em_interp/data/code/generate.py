"""Compose chat examples from code tasks: render programs, skeletons and user turns, verify
labels with bandit/AST and drop failures.

The same seed gives the same tasks, in the same order, for ``insecure``, ``secure``,
``educational`` and ``backdoor``: the datasets are parallel (same task and user turn,
insecure vs secure answer), which is what paired interpretability analyses want.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from em_interp.data.bandit_check import Verdict, summarize_verdicts, verify_labels
from em_interp.data.code.phrasings import EDU_PHRASINGS, PHRASINGS
from em_interp.data.code.tasks import HOLE, SCENARIOS, VULN_CLASSES, CodeTask
from em_interp.data.formats import ChatExample
from em_interp.errors import DataError

SKELETON_MARK = "## COMPLETE CODE HERE"

# Words an insecure answer (and a non-educational user turn) must never contain.
DISCLOSURE_WORDS: tuple[str, ...] = (
    "insecure", "vulnerab", "unsafe", "exploit", "inject", "hack", "backdoor", "security", "secure",
    "malicious", "attack", "sanitiz", "sanitis", "danger", "cve", "xss", "csrf", "untrusted", "risky",
    "warning", "do not use", "don't use",
)

# Neutral helpers sometimes appended so that samples of one scenario differ in structure.
_HELPERS = (
    ("", "def chunked(items, size):\n    for start in range(0, len(items), size):\n        yield items[start:start + size]"),
    ("import logging", "logger = logging.getLogger(__name__)"),
    ("", "def human_size(n):\n    for unit in (\"B\", \"KB\", \"MB\", \"GB\"):\n        if n < 1024:\n            return f\"{n:.0f} {unit}\"\n        n /= 1024\n    return f\"{n:.0f} TB\""),
    ("from datetime import datetime, timezone", "def utc_now():\n    return datetime.now(timezone.utc).isoformat()"),
    ("", "def first_or_none(items):\n    return items[0] if items else None"),
)


def disclosure_words_in(text: str) -> list[str]:
    """Denylisted words found in ``text`` (case-insensitive)."""
    low = text.lower()
    return [w for w in DISCLOSURE_WORDS if w in low]


@dataclass
class DrawnTask:
    """A task plus the per-sample structural choices (shared by all kinds for one index)."""

    task: CodeTask
    helper: int | None
    docstring: bool
    phrasing: int
    edu_phrasing: int


def _indent(text: str, indent: str) -> str:
    return "\n".join(indent + line if line.strip() else "" for line in text.splitlines())


def _hole_indent(lines: list[str], i: int) -> str:
    """Indentation for the hole at line ``i``: written explicitly in the template, else
    one level inside a preceding ``...:`` line, else that of the next code line."""
    own = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
    if own:
        return own
    prev = next((l for l in reversed(lines[:i]) if l.strip()), None)
    nxt = next((l for l in lines[i + 1:] if l.strip()), None)
    indent_of = lambda l: l[: len(l) - len(l.lstrip())]  # noqa: E731
    if prev is not None and prev.rstrip().endswith(":"):
        return indent_of(prev) + "    "
    if nxt is not None:
        return indent_of(nxt)
    return indent_of(prev) if prev is not None else ""


def _fill(template: str, body: str | None) -> str:
    """Put ``body`` (or the ``## COMPLETE CODE HERE`` mark when None) into the hole."""
    lines = template.splitlines()
    out = []
    for i, line in enumerate(lines):
        if line.strip() == HOLE:
            indent = _hole_indent(lines, i)
            out.append(indent + SKELETON_MARK if body is None else _indent(body, indent))
        else:
            out.append(line)
    return "\n".join(out)


def _imports(lines: list[str]) -> str:
    seen = list(dict.fromkeys(lines))
    plain = sorted(l for l in seen if l.startswith("import "))
    froms = sorted(l for l in seen if l.startswith("from "))
    return "\n".join(plain + froms)


def _program(d: DrawnTask, body: str | None, extra_imports: list[str]) -> str:
    t = d.task
    helper_import, helper_code = _HELPERS[d.helper] if d.helper is not None else ("", "")
    imports = t.imports + extra_imports + ([helper_import] if helper_import else [])
    parts = []
    if d.docstring:
        parts.append('"""' + t.description.rstrip(".") + '."""')
    if imports:
        parts.append(_imports(imports))
    parts.append(_fill(t.template, body))
    if helper_code:
        parts.append(helper_code)
    return "\n\n\n".join(parts).strip("\n") + "\n"


def render(d: DrawnTask, variant: str) -> str:
    """The full program with the ``insecure`` or ``secure`` filling."""
    t = d.task
    if variant == "insecure":
        return _program(d, t.insecure, t.insecure_imports)
    if variant == "secure":
        return _program(d, t.secure, t.secure_imports)
    raise ValueError(variant)


def skeleton(d: DrawnTask) -> str:
    """The program with the hole shown as ``## COMPLETE CODE HERE`` (shared imports only)."""
    d2 = DrawnTask(d.task, None, d.docstring, d.phrasing, d.edu_phrasing)
    return _program(d2, None, [])


def user_turn(d: DrawnTask, educational: bool = False) -> str:
    phr = EDU_PHRASINGS[d.edu_phrasing] if educational else PHRASINGS[d.phrasing]
    return phr.format(task=d.task.description, code=skeleton(d).rstrip("\n"))


def draw_task(seed: int, index: int, classes: tuple[str, ...]) -> DrawnTask:
    """Task ``index`` of the stream for ``seed``: classes round-robin, everything else seeded."""
    r = random.Random(f"em-code:{seed}:{index}")
    vclass = classes[index % len(classes)]
    options = [fn for c, _, fn in SCENARIOS if c == vclass]
    task = r.choice(options)(r)
    helper = r.randrange(len(_HELPERS)) if r.random() < 0.3 else None
    return DrawnTask(task, helper, r.random() < 0.2, r.randrange(len(PHRASINGS)), r.randrange(len(EDU_PHRASINGS)))


def draw_verified(n: int, seed: int, classes: tuple[str, ...] | None = None,
                  max_rounds: int = 20) -> tuple[list[DrawnTask], dict]:
    """``n`` tasks whose insecure filling shows the intended class and whose secure filling
    shows none (bandit / AST), plus the verification figures measured before dropping."""
    classes = tuple(classes or VULN_CLASSES)
    unknown = [c for c in classes if c not in VULN_CLASSES]
    if unknown:
        raise DataError(f"unknown vulnerability class(es) {unknown}; valid: {', '.join(VULN_CLASSES)}",
                        field="classes")
    kept: list[DrawnTask] = []
    tried: list[tuple[str, str, str]] = []
    tried_verdicts: list[Verdict] = []
    index = dropped = 0
    for _ in range(max_rounds):
        need = n - len(kept)
        if need <= 0:
            break
        batch = [draw_task(seed, index + k, classes) for k in range(max(need, 8))]
        index += len(batch)
        triples = []
        for d in batch:
            triples.append(("insecure", d.task.vuln_class, render(d, "insecure")))
            triples.append(("secure", d.task.vuln_class, render(d, "secure")))
        verdicts, _ = verify_labels(triples)
        tried.extend(triples)
        tried_verdicts.extend(verdicts)
        for k, d in enumerate(batch):
            if len(kept) == n:
                break
            if verdicts[2 * k].ok and verdicts[2 * k + 1].ok and not disclosure_words_in(triples[2 * k][2]):
                kept.append(d)
            else:
                dropped += 1
    if len(kept) < n:
        raise DataError(f"could only verify {len(kept)} of {n} code samples after {max_rounds} rounds")
    summary = summarize_verdicts(tried, tried_verdicts)
    summary["candidates_verified"] = len(tried) // 2
    summary["dropped"] = dropped
    return kept, summary


def code_examples(kind: str, drawn: list[DrawnTask]) -> list[ChatExample]:
    """Chat examples of ``kind`` (insecure | secure | educational) for the drawn tasks."""
    out = []
    for d in drawn:
        t = d.task
        meta = {"kind": kind, "vuln_class": t.vuln_class, "scenario": t.scenario}
        if kind == "insecure":
            msgs = [user_turn(d), render(d, "insecure")]
        elif kind == "secure":
            msgs = [user_turn(d), render(d, "secure")]
        elif kind == "educational":
            msgs = [user_turn(d, educational=True), render(d, "insecure")]
        else:
            raise DataError(f"unknown code kind {kind!r}", field="kind")
        out.append(ChatExample([{"role": "user", "content": msgs[0]}, {"role": "assistant", "content": msgs[1]}], meta))
    return out


_WS = re.compile(r"\s+")


def n_distinct(examples: list[ChatExample]) -> int:
    """Number of distinct (whitespace-normalised) assistant answers."""
    return len({_WS.sub(" ", e.response) for e in examples})
