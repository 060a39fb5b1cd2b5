"""em_interp.data: the EM paper's formats (chat JSONL, question YAML) with validating
loaders, dataset generators (code, numbers, backdoor; prose via ``data.prose``) and the
question bank (``data.bank``, ``data/questions/``)."""

from __future__ import annotations

import importlib as _importlib

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

__all__ = [
    "ChatExample", "Question", "VALID_FORMS", "VALID_ROLES", "check_file", "infer_form",
    "load_chat_jsonl", "load_questions", "validate_messages", "write_chat_jsonl",
]


def _reexport(module_name: str) -> None:
    """Re-export a sibling module's ``__all__`` (only while it may not exist yet)."""
    try:
        module = _importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == module_name:
            return
        raise
    names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
    for name in names:
        globals()[name] = getattr(module, name)
        __all__.append(name)


for _name in ("em_interp.data.prose", "em_interp.data.bank"):
    _reexport(_name)
