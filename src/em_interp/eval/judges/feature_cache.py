"""A per-text feature cache for judge training: safetensors chunks under
``$EM_INTERP_CACHE/judge_features/<namespace>/``, each holding the texts' sha256 keys and
their vectors, so reruns (and interrupted runs) only compute what is missing.

Never used at inference time and never written into the repository.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np


def cache_root() -> Path:
    """``$EM_INTERP_CACHE/judge_features`` (default ``~/.cache/em_interp/judge_features``)."""
    root = Path(os.environ.get("EM_INTERP_CACHE", Path.home() / ".cache" / "em_interp"))
    return root / "judge_features"


def text_key(text: str) -> bytes:
    """The 16-byte key of one text (sha256 prefix)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:16]


def _load_namespace(folder: Path) -> dict[bytes, np.ndarray]:
    from safetensors.numpy import load_file

    table: dict[bytes, np.ndarray] = {}
    for path in sorted(folder.glob("*.safetensors")):
        arrays = load_file(str(path))
        for k, v in zip(arrays["keys"], arrays["values"]):
            table[k.tobytes()] = v
    return table


def cached_features(texts: Sequence[str], compute: Callable[[list[str]], np.ndarray], namespace: str,
                    chunk: int = 256, log: Callable[[str], None] | None = print) -> np.ndarray:
    """Vectors for ``texts`` (in order): cached ones are read, missing unique texts are computed
    with ``compute(list_of_texts) -> [n, d]`` in chunks, each chunk saved as it completes."""
    from safetensors.numpy import save_file

    folder = cache_root() / namespace
    folder.mkdir(parents=True, exist_ok=True)
    table = _load_namespace(folder)
    keys = [text_key(t) for t in texts]
    missing: dict[bytes, str] = {}
    for k, t in zip(keys, texts):
        if k not in table and k not in missing:
            missing[k] = t
    todo = list(missing.items())
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        t0 = time.time()
        values = np.asarray(compute([t for _, t in part]), dtype=np.float32)
        kb = np.frombuffer(b"".join(k for k, _ in part), dtype=np.uint8).reshape(len(part), 16)
        name = hashlib.sha256(kb.tobytes()).hexdigest()[:24]
        save_file({"keys": kb, "values": values}, str(folder / f"{name}.safetensors"))
        for (k, _), v in zip(part, values):
            table[k] = v
        if log:
            log(f"  [{namespace}] {start + len(part)}/{len(todo)} new texts ({len(part) / max(time.time() - t0, 1e-9):.1f}/s)")
    if not keys:
        return np.zeros((0, 0), dtype=np.float32)
    return np.stack([table[k] for k in keys]).astype(np.float32)
