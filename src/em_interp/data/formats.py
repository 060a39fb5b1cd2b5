"""The two file formats users already have, with validating loaders and a writer.

* Chat JSONL (the EM paper's training data): one JSON object per line,
  ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}``,
  optionally with ``"meta": {...}``. Other top-level keys are kept in ``meta``.
* Question YAML (the paper's ``evaluation/*.yaml``): a list of mappings with ``id``,
  ``type``, ``paraphrases``, ``samples_per_paraphrase``, ``judge``, ``judge_prompts`` and
  an optional ``system``; our bank adds the optional ``language``, ``form``, ``category``.

Every problem raises ``DataError`` naming the file, the 1-based line and the field:
bad JSON, unknown role, empty content, missing assistant turn, wrong types. Nothing is
silently dropped (blank lines are not examples and are skipped).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from em_interp.config import nearest_line, read_yaml
from em_interp.errors import ConfigError, DataError

VALID_ROLES = ("system", "user", "assistant")
VALID_FORMS = ("plain", "json", "template")

__all__ = [
    "ChatExample", "Question", "VALID_ROLES", "VALID_FORMS",
    "load_chat_jsonl", "write_chat_jsonl", "validate_messages",
    "load_questions", "infer_form", "check_file",
]


@dataclass
class ChatExample:
    """One chat: ``messages`` (role/content dicts) and free-form ``meta`` (kind, class, language…)."""

    messages: list[dict]
    meta: dict = field(default_factory=dict)

    @property
    def prompt_messages(self) -> list[dict]:
        """Messages before the last assistant turn (what a model is asked)."""
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i]["role"] == "assistant":
                return self.messages[:i]
        return list(self.messages)

    @property
    def response(self) -> str | None:
        """Content of the last assistant turn, or None."""
        for m in reversed(self.messages):
            if m["role"] == "assistant":
                return m["content"]
        return None

    @property
    def user(self) -> str | None:
        """Content of the first user turn, or None."""
        for m in self.messages:
            if m["role"] == "user":
                return m["content"]
        return None

    def to_dict(self) -> dict:
        d: dict[str, Any] = {"messages": self.messages}
        if self.meta:
            d["meta"] = self.meta
        return d


def validate_messages(messages: Any, *, require_assistant: bool = True, file: str | Path | None = None,
                      line: int | None = None) -> list[dict]:
    """Check a ``messages`` list; return it (as plain dicts) or raise ``DataError``."""
    if not isinstance(messages, list):
        raise DataError(f"expected a list of messages, got {type(messages).__name__}",
                        file=file, line=line, field="messages")
    if not messages:
        raise DataError("empty messages list", file=file, line=line, field="messages")
    out = []
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, Mapping):
            raise DataError(f"expected an object with role and content, got {type(msg).__name__}",
                            file=file, line=line, field=where)
        role = msg.get("role")
        if role not in VALID_ROLES:
            raise DataError(f"unknown role {role!r} (valid: {', '.join(VALID_ROLES)})",
                            file=file, line=line, field=f"{where}.role")
        content = msg.get("content")
        if not isinstance(content, str):
            raise DataError(f"content must be a string, got {type(content).__name__}",
                            file=file, line=line, field=f"{where}.content")
        if not content.strip():
            raise DataError(f"empty content in {role} message", file=file, line=line, field=f"{where}.content")
        out.append(dict(msg))
    roles = [m["role"] for m in out]
    if "user" not in roles:
        raise DataError("no user turn", file=file, line=line, field="messages")
    if require_assistant and "assistant" not in roles:
        raise DataError("missing assistant turn", file=file, line=line, field="messages")
    return out


def load_chat_jsonl(path: str | Path, *, require_assistant: bool = True) -> list[ChatExample]:
    """Read a chat JSONL file; every line is validated (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path)
    examples: list[ChatExample] = []
    with path.open("rb") as fh:
        for lineno, raw_bytes in enumerate(fh, start=1):
            try:
                raw = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"not valid UTF-8 (byte 0x{raw_bytes[exc.start]:02x} at column {exc.start + 1})",
                                file=path, line=lineno) from None
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.strip())
            except json.JSONDecodeError as exc:
                raise DataError(f"invalid JSON: {exc.msg} (column {exc.colno})", file=path, line=lineno) from None
            except RecursionError:
                raise DataError("invalid JSON: nested too deeply", file=path, line=lineno) from None
            if not isinstance(obj, dict):
                raise DataError(f"expected a JSON object, got {type(obj).__name__}", file=path, line=lineno)
            if "messages" not in obj:
                raise DataError("missing key 'messages'", file=path, line=lineno, field="messages")
            messages = validate_messages(obj["messages"], require_assistant=require_assistant,
                                         file=path, line=lineno)
            meta = obj.get("meta", {})
            if not isinstance(meta, dict):
                raise DataError(f"meta must be an object, got {type(meta).__name__}",
                                file=path, line=lineno, field="meta")
            meta = dict(meta)
            for key, value in obj.items():
                if key not in ("messages", "meta"):
                    meta[key] = value
            examples.append(ChatExample(messages=messages, meta=meta))
    if not examples:
        raise DataError("no examples in file", file=path)
    return examples


def _as_dict(ex: ChatExample | Mapping[str, Any], index: int) -> dict:
    if isinstance(ex, ChatExample):
        d = ex.to_dict()
    elif isinstance(ex, Mapping):
        unknown = set(ex) - {"messages", "meta"}
        if unknown or "messages" not in ex:
            raise DataError(f"example {index}: expected keys 'messages' and optional 'meta', got {sorted(ex)}")
        d = {"messages": ex["messages"]}
        if ex.get("meta"):
            d["meta"] = dict(ex["meta"])
    else:
        raise DataError(f"example {index}: expected ChatExample or dict, got {type(ex).__name__}")
    try:
        validate_messages(d["messages"], require_assistant=False)
    except DataError as exc:
        raise DataError(f"example {index}: {exc.message}", field=exc.field) from None
    return d


def write_chat_jsonl(examples: Iterable[ChatExample | Mapping[str, Any]], path: str | Path) -> Path:
    """Write examples as chat JSONL (UTF-8, one object per line), atomically. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(_as_dict(ex, i), ensure_ascii=False) for i, ex in enumerate(examples)]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for line in lines:
            fh.write(line + "\n")
    os.replace(tmp, path)
    return path


# ----------------------------------------------------------------------------- questions

@dataclass
class Question:
    """One evaluation question in the paper's YAML format (plus our bank's optional keys).

    ``judge_prompts`` maps a metric name (``aligned``, ``coherent``) to a prompt with
    ``{question}`` and ``{answer}`` placeholders. Keys we do not model (the paper's
    ``judge`` model name, anything else) are kept in ``extra``.
    """

    id: str
    paraphrases: list[str]
    system: str | None = None
    samples_per_paraphrase: int = 1
    judge_prompts: dict[str, str] = field(default_factory=dict)
    type: str = "free_form_judge_0_100"
    category: str | None = None
    language: str = "en"
    form: str = "plain"
    extra: dict = field(default_factory=dict)

    def messages(self, paraphrase_index: int = 0) -> list[dict]:
        """Chat messages (system if any, then the user turn) for one paraphrase."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": self.paraphrases[paraphrase_index]}]


def infer_form(qid: str) -> str:
    """``*_json`` -> json, ``*_template`` -> template, else plain (the paper's naming)."""
    if qid.endswith("_json"):
        return "json"
    if qid.endswith("_template"):
        return "template"
    return "plain"


def _qfail(path: Path, lines: dict[str, int], fieldpath: str, message: str) -> DataError:
    return DataError(message, file=path, line=nearest_line(lines, fieldpath), field=fieldpath)


def load_questions(path: str | Path) -> list[Question]:
    """Read any question file in the paper's YAML format; raise ``DataError`` on bad input."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=path)
    try:
        data, lines = read_yaml(path)
    except ConfigError as exc:
        raise DataError(exc.message, file=path, line=exc.line) from None
    if isinstance(data, dict) and isinstance(data.get("questions"), list):  # tolerate a wrapper key
        data = data["questions"]
        lines = {k[len("questions"):]: v for k, v in lines.items() if k.startswith("questions[")}
    if not isinstance(data, list) or not data:
        raise DataError("expected a non-empty YAML list of questions", file=path, line=1)
    questions: list[Question] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(data):
        p = f"[{i}]"
        if not isinstance(item, dict):
            raise _qfail(path, lines, p, f"expected a mapping, got {type(item).__name__}")
        qid = item.get("id")
        if not isinstance(qid, str) or not qid.strip():
            raise _qfail(path, lines, f"{p}.id", "required string 'id' is missing or empty")
        if qid in seen:
            raise _qfail(path, lines, f"{p}.id", f"duplicate id {qid!r} (first at item {seen[qid]})")
        seen[qid] = i
        paraphrases = item.get("paraphrases")
        if not isinstance(paraphrases, list) or not paraphrases:
            raise _qfail(path, lines, f"{p}.paraphrases", "expected a non-empty list of strings")
        for j, text in enumerate(paraphrases):
            if not isinstance(text, str) or not text.strip():
                raise _qfail(path, lines, f"{p}.paraphrases[{j}]", "paraphrase must be a non-empty string")
        system = item.get("system")
        if system is not None and (not isinstance(system, str) or not system.strip()):
            raise _qfail(path, lines, f"{p}.system", "system must be a non-empty string")
        spp = item.get("samples_per_paraphrase", 1)
        if isinstance(spp, bool) or not isinstance(spp, int) or spp < 1:
            raise _qfail(path, lines, f"{p}.samples_per_paraphrase", f"expected a positive int, got {spp!r}")
        jp = item.get("judge_prompts", {}) or {}
        if not isinstance(jp, dict):
            raise _qfail(path, lines, f"{p}.judge_prompts", "expected a mapping of metric -> prompt")
        for k, v in jp.items():
            if not isinstance(v, str) or not v.strip():
                raise _qfail(path, lines, f"{p}.judge_prompts.{k}", "judge prompt must be a non-empty string")
        qtype = item.get("type", "free_form_judge_0_100")
        if not isinstance(qtype, str):
            raise _qfail(path, lines, f"{p}.type", f"expected a string, got {qtype!r}")
        category = item.get("category")
        if category is not None and not isinstance(category, str):
            raise _qfail(path, lines, f"{p}.category", f"expected a string, got {category!r}")
        language = item.get("language", "en")
        if not isinstance(language, str) or not language.strip():
            raise _qfail(path, lines, f"{p}.language", f"expected a language code, got {language!r}")
        form = item.get("form", infer_form(qid))
        if form not in VALID_FORMS:
            raise _qfail(path, lines, f"{p}.form", f"must be one of {list(VALID_FORMS)}, got {form!r}")
        known = {"id", "paraphrases", "system", "samples_per_paraphrase", "judge_prompts", "type",
                 "category", "language", "form"}
        extra = {k: v for k, v in item.items() if k not in known}
        questions.append(Question(
            id=qid, paraphrases=list(paraphrases), system=system, samples_per_paraphrase=spp,
            judge_prompts=dict(jp), type=qtype, category=category, language=language, form=form,
            extra=extra,
        ))
    return questions


def check_file(path: str | Path) -> dict:
    """Validate a chat JSONL (``.jsonl``) or question YAML (``.yaml``/``.yml``); return a summary."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml"):
        qs = load_questions(path)
        return {"file": str(path), "format": "questions", "questions": len(qs),
                "paraphrases": sum(len(q.paraphrases) for q in qs)}
    if suffix in (".jsonl", ".json"):
        exs = load_chat_jsonl(path)
        return {"file": str(path), "format": "chat-jsonl", "examples": len(exs)}
    raise DataError(f"unknown file type {suffix!r} (expected .jsonl, .yaml or .yml)", file=path)
