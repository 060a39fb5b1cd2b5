"""Shared pieces of the one CLI vocabulary (see ``em_interp.cli``): deprecated flag
aliases, ``--out`` folders, and a progress bar that follows an append-only results file."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

OUT_HELP = "Output folder (created if missing)."
MAX_LENGTH_HELP = "Truncate each input to this many tokens."
SAMPLES_HELP = "Samples per question paraphrase."


def deprecated_alias(new: str, old: str, value: Any, old_value: Any) -> Any:
    """``old_value`` when the hidden old flag ``old`` was given (printing a deprecation line), else ``value``."""
    if old_value is None:
        return value
    print(f"note: {old} is deprecated; use {new}", file=sys.stderr)
    return old_value


def out_file(out: Path, name: str, *, legacy_suffix: str | None = None) -> Path:
    """The file ``name`` inside the ``--out`` folder. A path ending in ``legacy_suffix`` (the old
    file form of ``--out``) is still taken as the file itself, with a deprecation line."""
    out = Path(out)
    if legacy_suffix and out.suffix == legacy_suffix:
        print(f"note: --out {out} names a file; --out is a folder now (writing {out} as before)", file=sys.stderr)
        return out
    out.mkdir(parents=True, exist_ok=True)
    return out / name


class FileProgress:
    """tqdm bars (to stderr) for records appended to a JSONL file by another call: one bar per
    ``{label: marker}`` counting lines that contain ``marker``, polled every ``interval`` s."""

    def __init__(self, path: Path, totals: dict[str, int], markers: dict[str, str], *, interval: float = 1.0,
                 disable: bool = False) -> None:
        self.path, self.markers, self.interval = Path(path), markers, interval
        self.disable = disable or not sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offset = 0
        self.counts = {k: 0 for k in markers}
        self._totals = totals
        self._bars: dict[str, Any] = {}

    def _poll(self) -> None:
        if not self.path.is_file():
            return
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        cut = chunk.rfind(b"\n") + 1  # whole lines only
        self._offset += cut
        for label, marker in self.markers.items():
            n = chunk[:cut].count(marker.encode("utf-8"))
            if n:
                self.counts[label] += n
                self._bars[label].update(n)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def __enter__(self) -> "FileProgress":
        from tqdm.auto import tqdm

        for pos, (label, total) in enumerate(self._totals.items()):
            self._bars[label] = tqdm(total=total, desc=label, unit="answer", position=pos, leave=True,
                                     disable=self.disable, file=sys.stderr)
        if self.path.is_file():
            self._offset = self.path.stat().st_size  # count only what this call appends
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._poll()
        for bar in self._bars.values():
            bar.close()


PROGRESS_HELP = "Progress bars with rates on stderr (default: when stderr is a terminal); a rate line per step either way."


def with_progress(command: Any) -> Any:
    """Run a typer command (which takes ``progress: Optional[bool]``) inside
    ``em_interp.progress.defaults(progress, summary=True)``: library calls follow the flag and
    each long step ends with a rate line on stderr. Without bars, transformers' own bars are
    off too."""
    import functools

    from em_interp.progress import defaults, enabled, library_bars

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        flag = kwargs.get("progress")
        with defaults(flag, summary=True), library_bars(enabled(flag)):
            return command(*args, **kwargs)

    return wrapper
