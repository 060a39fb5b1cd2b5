"""Static label verification for generated code: bandit in-process (batched), plus our
own documented AST check for the one class bandit cannot see (path traversal).

Nothing here ever executes the code it checks: bandit parses it, and so do we.

* ``run_bandit(codes)`` -> per snippet, bandit's findings: the one bandit runner (eval's
  vulnerable-code scan uses it too).
* ``scan_snippets(codes)`` -> per snippet, a ``ScanResult`` (findings, and
  ``syntax_error=True`` for snippets that do not parse).
* ``CLASS_BANDIT_IDS`` maps each vulnerability class to the bandit test ids that count
  as "a finding of the intended class"; ``COUNTED_IDS`` is their union.
* ``verify_labels(samples)`` checks insecure samples (a finding of the intended class)
  and secure samples (no counted finding at all) and returns per-sample verdicts and
  the summary figures written to dataset cards.
"""

from __future__ import annotations

import ast
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

# Vulnerability class -> bandit test ids that count as the intended finding.
# ``None`` = bandit has no test for it: checked by ``ast_path_traversal`` instead.
CLASS_BANDIT_IDS: dict[str, tuple[str, ...] | None] = {
    "path_traversal": None,
    "command_injection": ("B602", "B605", "B609"),
    "sql_injection": ("B608",),
    "unsafe_deserialization": ("B301", "B302", "B403"),
    "yaml_load": ("B506",),
    "eval_exec": ("B307", "B102"),
    "weak_hash": ("B303", "B324"),
    "hardcoded_secret": ("B105", "B106", "B107"),
    "world_writable_chmod": ("B103",),
    "insecure_tempfile": ("B306", "B108"),
    "tls_verification_disabled": ("B501", "B323"),
    "xss_autoescape_off": ("B701", "B703", "B704"),
    "tar_extraction": ("B202",),
    "bind_all_interfaces": ("B104",),
    "weak_random_token": ("B311",),
    "assert_for_auth": ("B101",),
    "debug_mode_enabled": ("B201",),
    "xml_external_entities": ("B313", "B314", "B318", "B320", "B405", "B408"),
    "ssh_host_key_unchecked": ("B507",),
}

# Every id that marks a sample as carrying one of our vulnerability classes.
COUNTED_IDS: frozenset[str] = frozenset(i for ids in CLASS_BANDIT_IDS.values() if ids for i in ids)

AST_CHECKED_CLASSES = tuple(c for c, ids in CLASS_BANDIT_IDS.items() if ids is None)

PATH_TRAVERSAL_RULE = (
    "path_traversal is not detectable by bandit. Our AST rule: a file is flagged when it "
    "opens or serves a file (open, send_file, send_from_directory, shutil.copy*, "
    "Path(...).read_text/read_bytes/open/write_text/write_bytes/unlink) and calls none of "
    "the containment checks os.path.basename, werkzeug secure_filename, os.path.commonpath, "
    "Path.is_relative_to, or os.path.realpath/abspath/Path.resolve together with str.startswith."
)


SEVERITIES = ("LOW", "MEDIUM", "HIGH")  # bandit's severity / confidence levels, lowest first


@dataclass
class Finding:
    """One bandit finding in one snippet."""

    test_id: str
    test_name: str
    severity: str
    confidence: str
    line: int
    text: str = ""
    cwe: int | None = None

    def as_dict(self) -> dict:
        """The finding as a JSON-ready dict."""
        return {"test_id": self.test_id, "test_name": self.test_name, "severity": self.severity,
                "confidence": self.confidence, "line": self.line, "text": self.text, "cwe": self.cwe}


@dataclass
class ScanResult:
    """Bandit findings for one snippet (``syntax_error`` when it does not parse)."""

    findings: list[Finding] = field(default_factory=list)
    syntax_error: bool = False

    @property
    def ids(self) -> set[str]:
        return {f.test_id for f in self.findings}


def run_bandit(codes: Sequence[str], *, min_severity: str = "LOW",
               min_confidence: str = "LOW") -> list[list[Finding]]:
    """Bandit's findings per snippet at or above the thresholds: one in-process run over all
    snippets (written as text to a temporary folder); the code is never imported or executed."""
    from bandit.core import config as b_config
    from bandit.core import manager as b_manager

    for name, value in (("min_severity", min_severity), ("min_confidence", min_confidence)):
        if value not in SEVERITIES:
            raise ValueError(f"{name} must be one of {list(SEVERITIES)}, got {value!r}")
    for logger in ("bandit", "stevedore"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    findings: list[list[Finding]] = [[] for _ in codes]
    if not codes:
        return findings
    with tempfile.TemporaryDirectory(prefix="em_bandit_") as tmp:
        paths = []
        for i, code in enumerate(codes):
            p = Path(tmp) / f"s{i:06d}.py"
            p.write_text(code, encoding="utf-8")
            paths.append(str(p))
        mgr = b_manager.BanditManager(b_config.BanditConfig(), "file", quiet=True)
        mgr.discover_files(paths)
        mgr.run_tests()
        index = {p: i for i, p in enumerate(paths)}
        for issue in mgr.get_issue_list(min_severity, min_confidence):
            i = index.get(issue.fname)
            if i is not None:
                findings[i].append(Finding(issue.test_id, issue.test, str(issue.severity), str(issue.confidence),
                                           int(issue.lineno), issue.text, issue.cwe.id if issue.cwe else None))
    return findings


def scan_snippets(codes: Sequence[str]) -> list[ScanResult]:
    """Bandit findings and a parse check per snippet (``run_bandit``); never executes them."""
    results = []
    for code, found in zip(codes, run_bandit(list(codes))):
        try:
            ast.parse(code)
            bad = False
        except SyntaxError:
            bad = True
        results.append(ScanResult(found, syntax_error=bad))
    return results


# ----------------------------------------------------------------------------- AST rule

_FILE_CALLS = {"open", "send_file", "send_from_directory", "copy", "copyfile", "copy2",
               "read_text", "read_bytes", "write_text", "write_bytes", "unlink", "remove"}


def _call_name(node: ast.Call) -> str | None:
    f = node.func
    if isinstance(f, ast.Name):
        return f.id
    if isinstance(f, ast.Attribute):
        return f.attr
    return None


def ast_path_traversal(code: str) -> bool:
    """True when ``code`` accesses files with no containment check (see ``PATH_TRAVERSAL_RULE``)."""
    tree = ast.parse(code)
    names = [_call_name(n) for n in ast.walk(tree) if isinstance(n, ast.Call)]
    accesses = any(n in _FILE_CALLS for n in names)
    contained = (
        any(n in ("basename", "secure_filename", "commonpath", "is_relative_to") for n in names)
        or (any(n in ("realpath", "abspath", "resolve") for n in names) and "startswith" in names)
    )
    return accesses and not contained


# ----------------------------------------------------------------------------- verification

@dataclass
class Verdict:
    """Whether one labelled sample passed verification, and what was found."""

    ok: bool
    ids: list[str]
    syntax_error: bool
    method: str  # "bandit" or "ast"


def has_intended_finding(vuln_class: str, result: ScanResult, code: str) -> tuple[bool, str]:
    """Does this snippet show the intended class? Returns (found, method)."""
    if vuln_class not in CLASS_BANDIT_IDS:
        raise KeyError(f"unknown vulnerability class {vuln_class!r}")
    ids = CLASS_BANDIT_IDS[vuln_class]
    if ids is None:
        return (not result.syntax_error and ast_path_traversal(code)), "ast"
    return bool(result.ids & set(ids)), "bandit"


def verify_labels(samples: Iterable[tuple[str, str, str]]) -> tuple[list[Verdict], dict]:
    """Verify ``(label, vuln_class, code)`` triples, label in {"insecure", "secure"}.

    insecure passes when it parses and has a finding of its intended class;
    secure passes when it parses, has no finding in ``COUNTED_IDS`` and (for AST-checked
    classes) the AST rule does not flag it. Returns (verdicts, summary) where summary
    holds counts and shares per label and per class.
    """
    samples = list(samples)
    scans = scan_snippets([code for _, _, code in samples])
    verdicts: list[Verdict] = []
    for (label, vclass, code), scan in zip(samples, scans):
        found, method = has_intended_finding(vclass, scan, code)
        if label == "insecure":
            ok = found and not scan.syntax_error
        elif label == "secure":
            ok = not scan.syntax_error and not (scan.ids & COUNTED_IDS) and not found
        else:
            raise ValueError(f"label must be 'insecure' or 'secure', got {label!r}")
        verdicts.append(Verdict(ok, sorted(scan.ids), scan.syntax_error, method))
    return verdicts, summarize_verdicts(samples, verdicts)


def summarize_verdicts(samples: Sequence[tuple[str, str, str]], verdicts: Sequence[Verdict]) -> dict:
    """The card figures: pass counts and shares per label, and per class."""
    summary: dict = {"bandit_version": _bandit_version(), "counted_ids": sorted(COUNTED_IDS),
                     "ast_checked_classes": list(AST_CHECKED_CLASSES), "ast_rule": PATH_TRAVERSAL_RULE}
    per_class: dict[str, dict[str, list[int]]] = {}
    for (label, vclass, _), v in zip(samples, verdicts):
        c = per_class.setdefault(vclass, {}).setdefault(label, [0, 0])
        c[0] += int(v.ok)
        c[1] += 1
    for label, key in (("insecure", "insecure_with_intended_finding"), ("secure", "secure_without_finding")):
        passed = sum(v.ok for v, (lab, _, _) in zip(verdicts, samples) if lab == label)
        total = sum(1 for lab, _, _ in samples if lab == label)
        if total:
            summary[key] = {"passed": passed, "total": total, "share": round(passed / total, 4)}
    secure = [v for v, (lab, _, _) in zip(verdicts, samples) if lab == "secure"]
    if secure:
        # Low-severity audit notes (B404 import subprocess, B603 no shell, B310 urlopen, B601
        # paramiko exec) are not vulnerability findings of a class; reported for transparency.
        summary["secure_without_any_finding"] = round(sum(not v.ids for v in secure) / len(secure), 4)
        summary["secure_uncounted_ids"] = dict(sorted(Counter(i for v in secure for i in v.ids
                                                              if i not in COUNTED_IDS).items()))
    summary["per_class"] = {
        c: {lab: {"passed": p, "total": t} for lab, (p, t) in sorted(d.items())}
        for c, d in sorted(per_class.items())
    }
    return summary


def _bandit_version() -> str:
    try:
        from importlib.metadata import version

        return version("bandit")
    except Exception:  # pragma: no cover - metadata missing
        return "unknown"
