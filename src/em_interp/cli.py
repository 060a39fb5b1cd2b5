"""The ``em-interp`` command line: thin, it parses, calls the stage APIs and prints paths.

Each stage package contributes its commands through ``<package>/cli.py``, which
defines ``register(app: typer.Typer)``. Errors of the toolkit's own types are printed
as one line (file:line: field: message) with exit status 2, never as a traceback.

One vocabulary across commands (docs/interfaces.md, "CLI vocabulary"): ``--out`` is always
a folder; ``--max-length`` truncates inputs to that many tokens; ``--samples`` is the
number of samples per question paraphrase; ``--max-new-tokens`` bounds generation. Older
spellings stay as hidden aliases that print a deprecation line (``cli_options``).
"""

from __future__ import annotations

import importlib
import os
import sys

from typing import Optional

import typer

from em_interp import __version__
from em_interp.errors import EmInterpError

app = typer.Typer(
    name="em-interp",
    help="Mechanistic interpretability of emergent misalignment: data -> train -> eval -> interp -> report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

def _version(value: bool) -> None:
    if value:
        typer.echo(f"em-interp {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                 help="Print the version and exit.")) -> None:
    """Mechanistic interpretability of emergent misalignment: data -> train -> eval -> interp -> report."""


# Order here is the order in `em-interp --help`.
_COMMAND_MODULES = [
    "em_interp.models.cli",
    "em_interp.data.cli",
    "em_interp.train.cli",
    "em_interp.eval.cli",
    "em_interp.interp.cli",
    "em_interp.report.cli",
    "em_interp.pipeline_cli",
]


def _register_all() -> None:
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(app)  # a missing module is a bug, never skipped


_register_all()


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        app(args=argv, standalone_mode=True)
    except EmInterpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
