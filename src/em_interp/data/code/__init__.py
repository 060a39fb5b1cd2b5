"""Python code datasets (insecure / secure / educational / backdoor): a family of tasks x
vulnerability classes (``tasks``, read from ``scenarios/<class>.yaml``), user-turn phrasings (``phrasings``) and composition
with bandit/AST label verification (``generate``)."""

from em_interp.data.code.generate import (
    DISCLOSURE_WORDS,
    DrawnTask,
    code_examples,
    disclosure_words_in,
    draw_task,
    draw_verified,
    n_distinct,
    render,
    skeleton,
    user_turn,
)
from em_interp.data.code.phrasings import EDU_PHRASINGS, PHRASINGS
from em_interp.data.code.tasks import SCENARIOS, VULN_CLASSES, CodeTask, Scenario, load_scenarios

__all__ = [
    "CodeTask", "DISCLOSURE_WORDS", "DrawnTask", "EDU_PHRASINGS", "PHRASINGS", "SCENARIOS", "Scenario",
    "VULN_CLASSES", "code_examples", "disclosure_words_in", "draw_task", "draw_verified", "load_scenarios",
    "n_distinct", "render", "skeleton", "user_turn",
]
