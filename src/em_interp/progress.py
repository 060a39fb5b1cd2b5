"""One progress helper for every long-running step: a tqdm bar on stderr with a rate.

Library functions that take a while (``interp.capture``, the ``*_direction`` extractors,
``steering_sweep``, ``ablate``'s mean mode, ``generate_answers``) take ``progress=``:

- ``None`` (default): on when stderr is a terminal (or as a surrounding ``defaults()`` says);
- ``True`` / ``False``: always / never.

A bar counts items (examples, answers, runs) per second and, where tokens are known,
shows tokens/s in its postfix. The CLI wraps each command in ``defaults(flag,
summary=True)``: library calls inside follow the command's ``--progress/--no-progress``
and every bar, shown or not, ends with one rate line on stderr::

    capture positive: 32 examples in 4.1s (7.8 examples/s, 1520 tokens/s)

so a log file of a non-interactive run still says how fast each step went.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, Iterator

_DEFAULT: ContextVar[bool | None] = ContextVar("em_interp_progress_default", default=None)
_SUMMARY: ContextVar[bool] = ContextVar("em_interp_progress_summary", default=False)


def stderr_is_tty() -> bool:
    try:
        return bool(sys.stderr.isatty())
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def enabled(progress: bool | None = None) -> bool:
    """Whether a bar is shown: ``progress`` if given, else the surrounding ``defaults()``, else
    whether stderr is a terminal."""
    if progress is not None:
        return bool(progress)
    default = _DEFAULT.get()
    return stderr_is_tty() if default is None else default


@contextlib.contextmanager
def defaults(progress: bool | None = None, *, summary: bool = False) -> Iterator[None]:
    """Inside: ``progress=None`` means ``progress`` (None: stderr is a terminal); with
    ``summary=True`` every closed bar also prints its rate line to stderr (the CLI's mode)."""
    t1 = _DEFAULT.set(progress)
    t2 = _SUMMARY.set(summary)
    try:
        yield
    finally:
        _DEFAULT.reset(t1)
        _SUMMARY.reset(t2)


@contextlib.contextmanager
def library_bars(show: bool) -> Iterator[None]:
    """With ``show=False``, transformers' / huggingface_hub's own bars ("Loading weights",
    downloads) are off inside, so a non-interactive log holds only rate lines."""
    if show:
        yield
        return
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


TRAIN_LOGGER = "em_interp.train"


@contextlib.contextmanager
def train_step_log(show: bool = True) -> Iterator[None]:
    """While inside (and ``show``), the train loop's INFO lines (logger ``em_interp.train``, one
    per optimizer step: step, loss, lr, tokens/s) go to stderr as ``train: step 3/8 ...``. For
    commands that train without a bar (``train --no-progress``, ``run``, ``transfer``)."""
    if not show:
        yield
        return
    logger = logging.getLogger(TRAIN_LOGGER)
    handler = logging.StreamHandler(sys.stderr)  # the stream of the moment (a test runner may swap it)
    handler.setFormatter(logging.Formatter("train: %(message)s"))
    old_level = logger.level
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        handler.flush()
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def _plural(unit: str, n: float) -> str:
    return unit if n == 1 or unit.endswith("s") else unit + "s"


def _rate(x: float) -> str:
    return f"{x:.0f}" if x >= 100 else f"{x:.3g}"


def rate_line(desc: str, n: int, unit: str, seconds: float, tokens: int = 0) -> str:
    """``desc: N units in S s (R units/s[, T tokens/s])``: the one summary format."""
    s = max(seconds, 1e-9)
    parts = [f"{_rate(n / s)} {_plural(unit, 2)}/s"]
    if tokens:
        parts.append(f"{_rate(tokens / s)} tokens/s")
    return f"{desc}: {n} {_plural(unit, n)} in {s:.1f}s ({', '.join(parts)})"


class Progress:
    """A bar of ``total`` ``unit``s named ``desc``: ``update(n, tokens=k)`` as work finishes.

    Use as a context manager (or call ``close()``). ``rate_line()`` is the one-line summary
    (count, seconds, items/s, tokens/s when tokens were counted). ``initial`` counts work
    already done (a resumed run): it fills the bar but not the rate."""

    def __init__(self, total: int | None, desc: str, unit: str = "it", *, progress: bool | None = None,
                 initial: int = 0) -> None:
        from tqdm.auto import tqdm

        self.desc, self.unit, self.total, self.initial = desc, unit, total, initial
        self.shown = enabled(progress)
        self.n = 0
        self.tokens = 0
        self._t0 = time.perf_counter()
        self._closed = False
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr,
                        disable=not self.shown, dynamic_ncols=True, mininterval=0.25, leave=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def update(self, n: int = 1, *, tokens: int | None = None) -> None:
        self.n += n
        if tokens:
            self.tokens += int(tokens)
        if self.shown:
            if self.tokens:
                self.bar.set_postfix_str(f"{_rate(self.tokens / max(self.elapsed, 1e-9))} tok/s", refresh=False)
            self.bar.update(n)

    def rate_line(self) -> str:
        return rate_line(self.desc, self.n, self.unit, self.elapsed, self.tokens)

    def close(self, *, summary: bool | None = None) -> None:
        if self._closed:
            return
        self._closed = True
        self.bar.close()
        if _SUMMARY.get() if summary is None else summary:
            print(self.rate_line(), file=sys.stderr, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        self.close(summary=False if exc_type is not None else None)
