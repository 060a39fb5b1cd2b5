"""`em-interp run CONFIG` (an experiment pipeline) and `em-interp transfer CONFIG` (the transfer
experiment): two stage lists on the one pipeline runner; both resume; both print the report path."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from em_interp.cli_options import PROGRESS_HELP, with_progress
from em_interp.pipeline.config import STAGES
from em_interp.pipeline.transfer_stages import TRANSFER_STAGES

# options both commands take (the same runner: the same run-directory and resume rules)
_OUT = typer.Option(None, "--out", help="Run directory to write (default: ROOT/NAME/<timestamp>).")
_RESUME = typer.Option(None, "--resume", help="Continue this run directory.")
_FRESH = typer.Option(False, "--fresh", help="Start a new run even if an unfinished one exists.")
_ROOT = typer.Option(Path("artifacts"), "--root", help="Where run directories go.")
_CHECK = typer.Option(False, "--check", help="Only validate the config and print the plan.")
_PROGRESS = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP)


def _plan(config: Path, cfg, stages, extra: str) -> None:
    typer.echo(f"{config}: ok (name {cfg.name}, model {cfg.model}, {extra}, config hash {cfg.hash()})")
    for stage in stages:
        typer.echo(f"  {stage.name:11s} {'on' if stage.enabled(cfg) else 'off'}")


def run_cmd(
    config: Path = typer.Argument(..., help="Experiment YAML, e.g. experiments/demo.yaml."),
    out: Optional[Path] = _OUT,
    from_stage: Optional[str] = typer.Option(
        None, "--from", help=f"Rerun from this stage (clears it and later ones): {', '.join(STAGES)}."),
    resume: Optional[Path] = _RESUME, fresh: bool = _FRESH, root: Path = _ROOT, check: bool = _CHECK,
    progress: Optional[bool] = _PROGRESS,
) -> None:
    """Run data -> train -> eval -> directions -> steering -> ablation -> probes -> report.

    Without --resume/--out the latest unfinished run of the same config is continued;
    finished stages whose outputs are still valid are skipped. A transfer config (one with
    `sources:`) runs as `em-interp transfer` would.
    """
    from em_interp.pipeline.config import load_experiment
    from em_interp.pipeline.runner import run
    from em_interp.transfer.config import is_transfer_config

    if is_transfer_config(config):
        transfer_cmd(config, out=out, from_stage=from_stage, resume=resume, fresh=fresh, root=root, device=None,
                     check=check, progress=progress)
        return
    if check:
        from em_interp.pipeline.stages import default_stages

        cfg = load_experiment(config)
        _plan(config, cfg, default_stages(), f"seeds {cfg.seeds}, arms {cfg.arm_names}")
        return
    from em_interp.progress import train_step_log

    with train_step_log():  # the train stage runs without bars: one log line per optimizer step
        result = run(config, out=out, from_stage=from_stage, resume=resume, fresh=fresh, root=root)
    typer.echo(str(result.report if result.report is not None else result.run_dir))


def transfer_cmd(
    config: Path = typer.Argument(..., help="Transfer experiment YAML (experiments/transfer_*.yaml)."),
    out: Optional[Path] = _OUT,
    from_stage: Optional[str] = typer.Option(
        None, "--from", help=f"Rerun from this stage (clears it and later ones): {', '.join(TRANSFER_STAGES)}."),
    resume: Optional[Path] = _RESUME, fresh: bool = _FRESH, root: Path = _ROOT,
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: the config's, else cuda when available)."),
    check: bool = _CHECK,
    progress: Optional[bool] = _PROGRESS,
) -> None:
    """Cross-language / cross-format transfer: finetune per source, evaluate every target,
    proximity, per-language directions and ablation, transfer matrices with clustered CIs and
    one permutation test per source. Resumes like `em-interp run`."""
    from em_interp.pipeline.transfer_stages import load_transfer, run_transfer, transfer_stages

    if check:
        cfg = load_transfer(config)
        _plan(config, cfg, transfer_stages(), f"sources {[s.label for s in cfg.sources]}, targets {cfg.targets}, "
                                              f"judge {cfg.judge.kind}")
        return
    from em_interp.progress import train_step_log

    with train_step_log():  # the train stage runs without bars: one log line per optimizer step
        result = run_transfer(config, out=out, from_stage=from_stage, resume=resume, fresh=fresh, root=root,
                              device=device)
    typer.echo(str(result.report if result.report is not None else result.run_dir))


def register(app: typer.Typer) -> None:
    app.command("run")(with_progress(run_cmd))
    app.command("transfer")(with_progress(transfer_cmd))
