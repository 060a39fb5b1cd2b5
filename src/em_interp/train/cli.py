"""`em-interp train CONFIG.yaml [--seeds 0 1 2] [--out DIR] [--resume] [--no-progress]`.

On a terminal a progress bar per seed shows steps/s, loss and tokens/s. Without one
(``--no-progress``, ``progress: false`` in the config, or stderr not a terminal: a log
file, CI) the loop's log (logger ``em_interp.train.loop``) goes to stderr instead: one
line per optimizer step (every ``logging_steps``)::

    train: step 3/8 loss 1.2345 lr 0.0003 tokens/s 812.4
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from em_interp.cli_options import PROGRESS_HELP
from em_interp.errors import ConfigError

def _parse_seeds(first: Optional[str], rest: list[str]) -> list[int] | None:
    """``--seeds 0 1 2`` (click hands over ``0`` and leaves ``1 2`` as extra arguments) or ``--seeds 0,1,2``."""
    if first is None:
        if rest:
            raise ConfigError(f"unexpected arguments {rest}; did you mean --seeds {' '.join(rest)}?", field="seeds")
        return None
    values = [v for item in [first, *rest] for v in item.split(",") if v.strip()]
    try:
        return [int(v) for v in values]
    except ValueError:
        raise ConfigError(f"seeds must be integers, got {values}", field="seeds") from None


def train_cmd(
    config: Path = typer.Argument(..., help="Train config YAML (fields of TrainConfig, or a 'train:' section)."),
    more_seeds: Optional[List[str]] = typer.Argument(None, hidden=True),
    seeds: Optional[str] = typer.Option(None, "--seeds", help="One run per seed: --seeds 0 1 2 (-> OUT/seed-N/)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output folder (overrides output_dir)."),
    resume: bool = typer.Option(False, "--resume", help="Continue a partial run; finished runs are skipped."),
    data: Optional[Path] = typer.Option(None, "--data", help="Chat JSONL (overrides data)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Base model (overrides model)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after N optimizer steps."),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP.replace(
        "a rate line per step either way", "without bars, one log line per optimizer step (loss, lr, tokens/s)")),
) -> None:
    """Finetune (LoRA, rank-1 LoRA or full) with assistant-only loss; prints the output folders."""
    from dataclasses import replace

    from em_interp.train.config import load_train_config
    from em_interp.train.loop import train, train_seeds

    seed_list = _parse_seeds(seeds, list(more_seeds or []))
    cfg = load_train_config(config)
    overrides: dict = {}
    if out is not None:
        overrides["output_dir"] = str(out)
    if data is not None:
        overrides["data"] = str(data)
    if model is not None:
        overrides["model"] = model
    if max_steps is not None:
        overrides["max_steps"] = max_steps
    from em_interp.progress import stderr_is_tty

    # a bar only when asked, or by default on a terminal (and the config does not say progress: false)
    overrides["progress"] = progress if progress is not None else (cfg.progress and stderr_is_tty())
    try:
        cfg = replace(cfg, **overrides)
    except ValueError as exc:  # the config's own range checks, on a command-line override
        raise ConfigError(str(exc), file=config) from None
    if Path(cfg.output_dir).exists() and not Path(cfg.output_dir).is_dir():
        raise ConfigError("output folder is a file; give a folder with --out", file=cfg.output_dir)
    from em_interp.progress import library_bars, train_step_log

    with train_step_log(not cfg.progress), library_bars(cfg.progress):
        results = train_seeds(cfg, seed_list, resume=resume) if seed_list else [train(cfg, resume=resume)]
    for r in results:
        curve = r.metadata.get("loss_curve") or []
        summary = {"output_dir": str(r.output_dir), "seed": r.metadata.get("seed"),
                   "steps": r.metadata.get("steps"), "skipped": r.skipped,
                   "first_loss": curve[0]["loss"] if curve else None,
                   "last_loss": curve[-1]["loss"] if curve else None,
                   "tokens_per_s": r.metadata.get("tokens_per_s")}
        typer.echo(json.dumps(summary))


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
