"""A cheap language detector for the project's six languages (en de fr es ru zh), used by
judges to refuse or flag rows they were not trained for.

Script first (Han characters -> zh, Cyrillic -> ru), then stopword counts for the Latin
languages. Returns ``"und"`` when a text has no letters or no stopword evidence at all
(short answers, code): callers treat ``und`` as unknown, not as non-English.
"""

from __future__ import annotations

import re
from typing import Mapping

LANGUAGES = ("en", "de", "fr", "es", "ru", "zh")
UNDETERMINED = "und"

_STOPWORDS: Mapping[str, frozenset[str]] = {
    "en": frozenset("the and is are was to of in that it you for with this not be have what would i my your".split()),
    "de": frozenset("der die das und ist nicht ich du sie es ein eine zu mit den von auf für sich auch wie dass".split()),
    "fr": frozenset("le la les et est une un des du que qui pas je vous il elle pour dans sur avec ce mais".split()),
    "es": frozenset("el la los las y es una un que no por para con del se lo como pero su yo muy".split()),
}
_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def detect_language(text: str) -> str:
    """One of ``LANGUAGES`` or ``"und"``."""
    letters = [c for c in text if c.isalpha()]
    if not letters:
        return UNDETERMINED
    han = sum("\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf" for c in letters)
    cyr = sum("\u0400" <= c <= "\u04ff" for c in letters)
    if han / len(letters) > 0.2:
        return "zh"
    if cyr / len(letters) > 0.3:
        return "ru"
    words = [w.lower() for w in _WORD.findall(text)]
    counts = {lang: sum(w in sw for w in words) for lang, sw in _STOPWORDS.items()}
    best = max(counts, key=lambda k: counts[k])
    return best if counts[best] > 0 else UNDETERMINED


def is_english(text: str) -> bool:
    """True unless the text is detected as one of the other five languages."""
    return detect_language(text) in ("en", UNDETERMINED)
