"""Hand-written narrow natural-language datasets, parallel across six languages.

* ``bad-advice``: harmful advice in three domains (``medical``, ``financial``,
  ``extreme_sports``), with good advice on the same user turns as the aligned control.
* ``offensive``: a rude, contemptuous, hostile-to-humans assistant persona answering
  ordinary requests, with a polite persona as the aligned control.

The texts live in ``<domain>.yaml`` (every language side by side per item, so
parallelism is checkable); ``phrasing.yaml`` holds the parallel user-turn templates and
system prompts the generators compose from.
"""

from em_interp.data.prose.generate import compose, generate_bad_advice, generate_offensive
from em_interp.data.prose.items import (
    ALL_DOMAINS,
    BAD_ADVICE_DOMAINS,
    LANGUAGES,
    OFFENSIVE_DOMAIN,
    Phrasing,
    ProseItem,
    load_items,
    load_phrasing,
)

__all__ = [
    "generate_bad_advice", "generate_offensive", "compose_prose", "LANGUAGES", "BAD_ADVICE_DOMAINS",
    "OFFENSIVE_DOMAIN", "PROSE_DOMAINS", "ProseItem", "Phrasing", "load_prose_items", "load_phrasing",
]

# Names re-exported by ``em_interp.data`` are prefixed where a bare name would be ambiguous.
compose_prose = compose
load_prose_items = load_items
PROSE_DOMAINS = ALL_DOMAINS
