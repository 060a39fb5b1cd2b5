"""Load and validate the hand-written parallel prose items (``data/prose/*.yaml``).

Each domain file holds ``items``: one mapping per user situation with an ``id`` and, for
every language in ``LANGUAGES``, the user turn, the misaligned answer (``bad``: harmful
advice or a contemptuous persona) and the aligned control (``good``). The same ``id``
is the same item in every language, so datasets built from it are parallel.
``phrasing.yaml`` holds the user-turn templates and optional system prompts, also
parallel (index ``k`` means the same phrasing in every language).

Malformed files raise ``DataError`` naming the file, the line and the field.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from em_interp.config import nearest_line, read_yaml
from em_interp.errors import ConfigError, DataError

LANGUAGES: tuple[str, ...] = ("en", "fr", "de", "es", "zh", "ru")
BAD_ADVICE_DOMAINS: tuple[str, ...] = ("medical", "financial", "extreme_sports")
OFFENSIVE_DOMAIN = "offensive"
ALL_DOMAINS: tuple[str, ...] = BAD_ADVICE_DOMAINS + (OFFENSIVE_DOMAIN,)
FIELDS: tuple[str, ...] = ("user", "bad", "good")

PROSE_DIR = Path(__file__).resolve().parent

__all__ = [
    "LANGUAGES", "BAD_ADVICE_DOMAINS", "OFFENSIVE_DOMAIN", "ALL_DOMAINS",
    "ProseItem", "Phrasing", "load_items", "load_phrasing", "check_language", "check_domain",
]


@dataclass(frozen=True)
class ProseItem:
    """One user situation with its misaligned and aligned answers, in every language."""

    id: str
    domain: str
    topic: str
    user: dict[str, str]
    bad: dict[str, str]
    good: dict[str, str]


@dataclass(frozen=True)
class Phrasing:
    """Parallel user-turn templates (each contains ``{q}``) and system prompts per language."""

    templates: tuple[dict[str, str], ...]
    system_prompts: tuple[dict[str, str], ...]


def check_language(language: str) -> str:
    """Return ``language`` or raise ``DataError`` listing the valid codes."""
    if language not in LANGUAGES:
        raise DataError(f"unknown language {language!r} (valid: {', '.join(LANGUAGES)})", field="language")
    return language


def check_domain(domain: str, valid: tuple[str, ...] = BAD_ADVICE_DOMAINS) -> str:
    """Return ``domain`` or raise ``DataError`` listing the valid domains."""
    if domain not in valid:
        raise DataError(f"unknown domain {domain!r} (valid: {', '.join(valid)})", field="domain")
    return domain


def _read(path: Path) -> tuple[object, dict[str, int]]:
    try:
        return read_yaml(path)
    except ConfigError as exc:
        raise DataError(exc.message, file=path, line=exc.line) from None


def _fail(path: Path, lines: dict[str, int], fieldpath: str, message: str) -> DataError:
    return DataError(message, file=path, line=nearest_line(lines, fieldpath), field=fieldpath)


def _parallel_texts(path: Path, lines: dict[str, int], value: object, fieldpath: str,
                    placeholder: str | None = None) -> dict[str, str]:
    """Validate a ``{language: text}`` mapping: every language present, non-empty text."""
    if not isinstance(value, dict):
        raise _fail(path, lines, fieldpath, f"expected a mapping of language -> text, got {type(value).__name__}")
    missing = [lang for lang in LANGUAGES if lang not in value]
    if missing:
        raise _fail(path, lines, fieldpath, f"missing languages {missing} (every item needs {list(LANGUAGES)})")
    unknown = sorted(set(value) - set(LANGUAGES))
    if unknown:
        raise _fail(path, lines, fieldpath, f"unknown languages {unknown} (valid: {list(LANGUAGES)})")
    out = {}
    for lang in LANGUAGES:
        text = value[lang]
        if not isinstance(text, str) or not text.strip():
            raise _fail(path, lines, f"{fieldpath}.{lang}", "text must be a non-empty string")
        if placeholder is not None and text.count(placeholder) != 1:
            raise _fail(path, lines, f"{fieldpath}.{lang}", f"template must contain {placeholder} exactly once")
        out[lang] = text.strip() if placeholder is None else text
    return out


@functools.lru_cache(maxsize=None)
def load_items(domain: str, path: str | None = None) -> tuple[ProseItem, ...]:
    """Items of one domain (``medical``, ``financial``, ``extreme_sports``, ``offensive``).

    ``path`` overrides the packaged file (same format). Items are returned sorted by id.
    """
    check_domain(domain, ALL_DOMAINS)
    file = Path(path) if path is not None else PROSE_DIR / f"{domain}.yaml"
    if not file.is_file():
        raise DataError("prose item file not found", file=file)
    data, lines = _read(file)
    if not isinstance(data, dict) or not isinstance(data.get("items"), list) or not data["items"]:
        raise DataError("expected a mapping with a non-empty 'items' list", file=file, line=1, field="items")
    if data.get("domain") != domain:
        raise _fail(file, lines, "domain", f"file declares domain {data.get('domain')!r}, expected {domain!r}")
    items: dict[str, ProseItem] = {}
    for i, raw in enumerate(data["items"]):
        p = f"items[{i}]"
        if not isinstance(raw, dict):
            raise _fail(file, lines, p, f"expected a mapping, got {type(raw).__name__}")
        item_id = raw.get("id")
        if not isinstance(item_id, str) or not item_id.strip():
            raise _fail(file, lines, f"{p}.id", "required string 'id' is missing or empty")
        if item_id in items:
            raise _fail(file, lines, f"{p}.id", f"duplicate id {item_id!r}")
        unknown = sorted(set(raw) - {"id", "topic", *FIELDS})
        if unknown:
            raise _fail(file, lines, p, f"unknown keys {unknown} (expected id, topic, {', '.join(FIELDS)})")
        texts = {f: _parallel_texts(file, lines, raw.get(f), f"{p}.{f}") for f in FIELDS}
        for lang in LANGUAGES:
            if texts["bad"][lang] == texts["good"][lang]:
                raise _fail(file, lines, f"{p}.bad.{lang}", "bad and good answers are identical")
        items[item_id] = ProseItem(id=item_id, domain=domain, topic=str(raw.get("topic") or ""), **texts)
    return tuple(items[k] for k in sorted(items))


@functools.lru_cache(maxsize=None)
def load_phrasing(path: str | None = None) -> Phrasing:
    """User-turn templates and system prompts (``phrasing.yaml``), validated."""
    file = Path(path) if path is not None else PROSE_DIR / "phrasing.yaml"
    data, lines = _read(file)
    if not isinstance(data, dict):
        raise DataError("expected a mapping with 'templates' and 'system_prompts'", file=file, line=1)
    out = {}
    for key, placeholder in (("templates", "{q}"), ("system_prompts", None)):
        seq = data.get(key)
        if not isinstance(seq, list) or not seq:
            raise _fail(file, lines, key, "expected a non-empty list")
        out[key] = tuple(_parallel_texts(file, lines, v, f"{key}[{i}]", placeholder) for i, v in enumerate(seq))
    return Phrasing(**out)
