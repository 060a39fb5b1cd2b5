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
    ``{label: marker}`` counting lines that contain ``marker``, polled every ``interval`` s.

    Bars follow ``em_interp.progress.enabled(progress)``; labels in ``hidden`` are counted but
    get no bar (another bar already shows them). Counting goes on with bars off:
    ``rate_lines()`` gives, per label, ``label: N answers in S s (R answers/s[, T tokens/s])``,
    timed from the start (first label) or from the previous label's last record, with the
    records' ``n_tokens`` summed where ``tokens`` names the label."""

    def __init__(self, path: Path, totals: dict[str, int], markers: dict[str, str], *, interval: float = 0.25,
                 disable: bool = False, progress: bool | None = None, hidden: tuple[str, ...] = (),
                 tokens: tuple[str, ...] = ()) -> None:
        from em_interp.progress import enabled

        self.path, self.markers, self.interval = Path(path), markers, interval
        self.disable = disable or not enabled(progress)
        self.hidden, self.token_labels = set(hidden), set(tokens)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._offset = 0
        self.counts = {k: 0 for k in markers}
        self.tokens = {k: 0 for k in markers}
        self.last_seen: dict[str, float] = {}
        self._t0 = 0.0
        self._totals = totals
        self._bars: dict[str, Any] = {}

    def _poll(self) -> None:
        import json
        import time

        if not self.path.is_file():
            return
        with self.path.open("rb") as fh:
            fh.seek(self._offset)
            chunk = fh.read()
        cut = chunk.rfind(b"\n") + 1  # whole lines only
        self._offset += cut
        now = time.perf_counter()
        for label, marker in self.markers.items():
            n = chunk[:cut].count(marker.encode("utf-8"))
            if n:
                self.counts[label] += n
                self.last_seen[label] = now
                if label in self.token_labels:
                    for line in chunk[:cut].splitlines():
                        if marker.encode("utf-8") in line:
                            try:
                                self.tokens[label] += int(json.loads(line).get("n_tokens") or 0)
                            except (ValueError, TypeError, AttributeError):
                                pass
                if label in self._bars:
                    self._bars[label].update(n)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def rate_lines(self) -> list[str]:
        from em_interp.progress import rate_line

        lines, start = [], self._t0
        for label in self.markers:
            if not self.counts[label]:
                continue
            end = self.last_seen[label]
            lines.append(rate_line(label, self.counts[label], "answer", end - start, self.tokens[label]))
            start = end
        return lines

    def __enter__(self) -> "FileProgress":
        import time

        from tqdm.auto import tqdm

        shown = [label for label in self._totals if label not in self.hidden]
        for pos, label in enumerate(shown):
            self._bars[label] = tqdm(total=self._totals[label], desc=label, unit="answer", position=pos,
                                     leave=True, disable=self.disable, file=sys.stderr)
        if self.path.is_file():
            self._offset = self.path.stat().st_size  # count only what this call appends
        self._t0 = time.perf_counter()
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
