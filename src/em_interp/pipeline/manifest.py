"""The run manifest (``manifest.json``) and the file hashing the stage markers use.

The manifest records what is needed to trust and reproduce a run: package versions,
Python, the config hash, the base model's identity (registry sha256 of the GGUF, or the
folder / tiny spec), adapter hashes, the git commit, start/end times and each stage's
status and duration. It is rewritten atomically (temp file + rename) after every change,
so a crash never leaves half a manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from em_interp.hashing import sha256_file

MANIFEST = "manifest.json"
DONE = ".done.json"

_PACKAGES = ("em-interp", "torch", "transformers", "peft", "accelerate", "transformer-lens", "nnsight",
             "scikit-learn", "numpy", "safetensors", "bandit", "sentence-transformers")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(start: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the repository holding the em_interp sources (None outside git)."""
    start = start or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=start,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return {"commit": commit, "dirty": bool(dirty)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def tree_hashes(root: Path, exclude: tuple[str, ...] = (DONE,)) -> dict[str, str]:
    """``{relative path: sha256}`` of every regular file under ``root`` (sorted, markers excluded)."""
    out: dict[str, str] = {}
    if not root.is_dir():
        return out
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name not in exclude and not p.name.startswith(".started"):
            out[p.relative_to(root).as_posix()] = sha256_file(p)
    return out


def digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


class Manifest:
    """``manifest.json`` of one run directory; every mutation is saved at once."""

    def __init__(self, run_dir: Path, data: dict[str, Any]):
        self.run_dir = run_dir
        self.data = data

    @property
    def path(self) -> Path:
        return self.run_dir / MANIFEST

    @classmethod
    def load(cls, run_dir: Path) -> "Manifest | None":
        data = read_json(run_dir / MANIFEST)
        return cls(run_dir, data) if isinstance(data, dict) else None

    @classmethod
    def create(cls, run_dir: Path, *, name: str, config_path: str | None, config_hash: str,
               stages: list[str]) -> "Manifest":
        m = cls(run_dir, {
            "name": name,
            "config_path": config_path,
            "config_hash": config_hash,
            "created": now_iso(),
            "started": None,
            "ended": None,
            "finished": False,
            "packages": package_versions(),
            "git": git_state(),
            "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
            "models": {},
            "adapters": {},
            "stages": {s: {"status": "pending"} for s in stages},
            "report": None,
            "history": [],
        })
        m.save()
        return m

    def save(self) -> None:
        write_json_atomic(self.path, self.data)

    def begin_session(self, *, config_hash: str, from_stage: str | None) -> None:
        """A (re)start of the run: record it; versions and commit reflect the latest session."""
        self.data["started"] = self.data.get("started") or now_iso()
        self.data["ended"] = None
        self.data["finished"] = False
        self.data["config_hash"] = config_hash
        self.data["packages"] = package_versions()
        self.data["git"] = git_state()
        self.data.setdefault("history", []).append(
            {"session_start": now_iso(), "from_stage": from_stage, "config_hash": config_hash})
        self.save()

    def set_stage(self, stage: str, **fields: Any) -> None:
        entry = self.data.setdefault("stages", {}).setdefault(stage, {})
        entry.update(fields)
        self.save()

    def finish(self, report: str | None) -> None:
        self.data["ended"] = now_iso()
        self.data["finished"] = True
        self.data["report"] = report
        self.save()


class Timer:
    """Wall-clock and process CPU seconds (all threads) since creation. CPU seconds do not
    grow when a shared machine is oversubscribed, so they estimate the idle-machine cost."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.c0 = time.process_time()

    @property
    def elapsed(self) -> float:
        return round(time.time() - self.t0, 3)

    @property
    def cpu(self) -> float:
        return round(time.process_time() - self.c0, 3)
