"""Shared benchmark helpers: machine info, timers, an RSS peak sampler, result files, tables.

Absolute times on a shared machine are noisy, so every benchmark runs its contenders
interleaved on the same inputs in one process and reports ratios; this module only
holds the plumbing (no benchmark logic).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

RESULTS = Path(__file__).resolve().parent / "results"


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """CPU model, cores, RAM, load, library versions, GPU name (if any) and the date."""
    import psutil
    import torch
    import transformers

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "load_avg_1m": round(os.getloadavg()[0], 2), "python": platform.python_version(),
        "torch": torch.__version__, "transformers": transformers.__version__, "device": device, "gpu": None,
    }
    for pkg in ("transformer_lens", "nnsight", "peft"):
        try:
            from importlib.metadata import version

            info[pkg] = version(pkg.replace("_", "-"))
        except Exception:  # pragma: no cover - optional
            info[pkg] = None
    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info["gpu"] = {"name": p.name, "memory_gb": round(p.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    return info


def sync(device: str) -> None:
    """Wait for queued GPU work (no-op on CPU) so timers measure finished work."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


class PeakRSS:
    """Samples this process's RSS in a thread; ``peak_delta`` = max RSS during the block
    minus RSS at its start (bytes). Coarse (sampled every ``interval`` s; the allocator may
    reuse freed memory), so treat it as an upper-level indicator, not an exact count."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.start = 0
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self, proc) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> "PeakRSS":
        import psutil

        proc = psutil.Process()
        self.start = self.peak = proc.memory_info().rss
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(proc,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        import psutil

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, psutil.Process().memory_info().rss)

    @property
    def peak_delta(self) -> int:
        return max(0, self.peak - self.start)


@contextmanager
def gpu_peak(device: str) -> Iterator[dict]:
    """On CUDA: ``out["peak_delta"]`` = max allocated during the block minus allocated at its start."""
    out = {"peak_delta": None}
    if not device.startswith("cuda"):
        yield out
        return
    import torch

    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    yield out
    torch.cuda.synchronize()
    out["peak_delta"] = torch.cuda.max_memory_allocated() - before


def tensor_bytes(obj: Any) -> int:
    """Bytes of all tensors reachable through dicts/lists/tuples (what a method holds)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def rotate(items: Sequence[Any], k: int) -> list[Any]:
    """``items`` rotated by ``k`` (contender order changes every round so none always runs first)."""
    k %= max(1, len(items))
    return list(items[k:]) + list(items[:k])


def mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 3)


def write_result(name: str, payload: dict, out_dir: Path = RESULTS) -> Path:
    """Write ``<out_dir>/<name>.json`` (indented, UTF-8) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table; floats get 3 significant digits, None becomes '-'."""
    def fmt(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            if v != v:
                return "nan"
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
