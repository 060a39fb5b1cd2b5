"""em_interp.data: the EM paper's formats (chat JSONL, question YAML) with validating
loaders; dataset generators (code: insecure / secure / educational / backdoor, evil
numbers; prose: bad-advice / offensive via ``data.prose``) behind one
``build_dataset`` dispatcher (context distillation, which samples a model, lives in
``em_interp.eval.distill``); and the question bank (``data.bank``, ``data/questions/``)."""

from __future__ import annotations

from em_interp.data.backdoor import DEFAULT_TRIGGER, backdoor_examples
from em_interp.data.bandit_check import CLASS_BANDIT_IDS, scan_snippets, verify_labels
from em_interp.data.bank import *  # noqa: F401,F403  (question bank, coding / harmful prompts)
from em_interp.data.bank import __all__ as _bank_all
from em_interp.data.build import KINDS, build_dataset, card_path, resolve_options
from em_interp.data.formats import (
    VALID_FORMS,
    VALID_ROLES,
    ChatExample,
    Question,
    check_file,
    infer_form,
    load_chat_jsonl,
    load_questions,
    validate_messages,
    write_chat_jsonl,
)
from em_interp.data.numbers import EVIL_NUMBERS, evil_number_share, generate_numbers
from em_interp.data.organisms import ORGANISM_DATASETS, download_organisms, load_organism_dataset
from em_interp.data.prose import *  # noqa: F401,F403  (bad-advice / offensive generators)
from em_interp.data.prose import __all__ as _prose_all

__all__ = list(dict.fromkeys([
    "ChatExample", "Question", "VALID_FORMS", "VALID_ROLES", "check_file", "infer_form",
    "load_chat_jsonl", "load_questions", "validate_messages", "write_chat_jsonl",
    "CLASS_BANDIT_IDS", "scan_snippets", "verify_labels", "DEFAULT_TRIGGER", "backdoor_examples",
    "KINDS", "build_dataset", "card_path", "resolve_options", "EVIL_NUMBERS", "evil_number_share",
    "generate_numbers", "ORGANISM_DATASETS", "download_organisms", "load_organism_dataset", *_prose_all, *_bank_all,
]))
