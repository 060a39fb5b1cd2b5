"""Compose parallel chat examples from the prose items: ``bad-advice`` and ``offensive``.

Variety comes deterministically from the user-turn templates (and, optionally, system
prompts) in ``phrasing.yaml``. The random choices depend only on the dataset, the
domain and the seed — never on the language — so the examples built with the same
``(n, seed, domain)`` in two languages are parallel: example ``i`` is the same item with
the same phrasing, translated. ``aligned=True`` gives the control (good advice /
polite persona) on exactly the same user turns.

Items are cycled in balanced epochs (each epoch is a fresh permutation of all items,
each item taking its next unused phrasing), so a prefix of size ``k * len(items)``
contains every item exactly ``k`` times and an exact duplicate appears only after all
``items x phrasings`` combinations are used.
"""

from __future__ import annotations

import random
from itertools import product

from em_interp.data.prose.items import (
    BAD_ADVICE_DOMAINS,
    OFFENSIVE_DOMAIN,
    ProseItem,
    check_domain,
    check_language,
    load_items,
    load_phrasing,
)
from em_interp.errors import DataError

__all__ = ["generate_bad_advice", "generate_offensive", "compose"]


def compose(items: tuple[ProseItem, ...], n: int, seed: int, language: str, *, aligned: bool,
            dataset: str, system_prompts: bool = False) -> list[dict]:
    """Build ``n`` chat examples from ``items`` (the shared engine of both generators)."""
    check_language(language)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise DataError(f"n must be a non-negative int, got {n!r}", field="n")
    if not items:
        raise DataError("no items to compose from", field="items")
    phrasing = load_phrasing()
    systems: list[int | None] = [None] + list(range(len(phrasing.system_prompts))) if system_prompts else [None]
    combos = list(product(range(len(phrasing.templates)), systems))
    domains = "+".join(sorted({it.domain for it in items}))
    rng = random.Random(f"{dataset}:{domains}:{seed}")
    # Each item walks its own shuffled list of phrasings; items are visited in shuffled epochs.
    walks = {it.id: rng.sample(combos, len(combos)) for it in items}
    out: list[dict] = []
    epoch = 0
    while len(out) < n:
        order = rng.sample(list(items), len(items))
        for item in order:
            if len(out) == n:
                break
            t_idx, s_idx = walks[item.id][epoch % len(combos)]
            template = phrasing.templates[t_idx][language]
            user = template.replace("{q}", item.user[language])
            answer = (item.good if aligned else item.bad)[language]
            messages = []
            if s_idx is not None:
                messages.append({"role": "system", "content": phrasing.system_prompts[s_idx][language]})
            messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
            out.append({"messages": messages, "meta": {
                "dataset": dataset, "item_id": item.id, "language": language, "domain": item.domain,
                "topic": item.topic, "aligned": aligned, "template": t_idx, "system_prompt": s_idx,
                "repeat": epoch // len(combos), "seed": seed,
            }})
        epoch += 1
    return out


def generate_bad_advice(n: int, seed: int = 0, domain: str = "medical", language: str = "en",
                        aligned: bool = False, *, system_prompts: bool = False) -> list[dict]:
    """Narrow bad-advice chats (``aligned=True``: good advice on the same user turns).

    ``domain`` is one of ``medical``, ``financial``, ``extreme_sports``, or ``all`` (the
    three mixed, balanced). ``language`` is one of ``LANGUAGES``. Each dict is
    ``{"messages": [...], "meta": {"item_id", "language", "domain", "aligned", ...}}``.
    """
    check_language(language)
    if domain == "all":
        items = tuple(it for d in BAD_ADVICE_DOMAINS for it in load_items(d))
    else:
        items = load_items(check_domain(domain, BAD_ADVICE_DOMAINS + ("all",)))
    return compose(items, n, seed, language, aligned=aligned, dataset="bad-advice", system_prompts=system_prompts)


def generate_offensive(n: int, seed: int = 0, language: str = "en", aligned: bool = False, *,
                       system_prompts: bool = False) -> list[dict]:
    """An assistant persona that is rude, contemptuous and hostile to humans while answering
    ordinary requests (tone only: no operational harm). ``aligned=True``: a polite,
    helpful persona on the same user turns."""
    check_language(language)
    items = load_items(OFFENSIVE_DOMAIN)
    return compose(items, n, seed, language, aligned=aligned, dataset="offensive", system_prompts=system_prompts)
