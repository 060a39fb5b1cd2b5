"""The report package's error type (a user error: bad input file, missing figure, bad run dir)."""

from __future__ import annotations

from em_interp.errors import EmInterpError


class ReportError(EmInterpError):
    """A report cannot be built from its inputs (names the file, line and field)."""
