"""`em-interp run CONFIG`: run an experiment pipeline (resumable); prints the report path."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from em_interp.pipeline.config import STAGES


def run_cmd(
    config: Path = typer.Argument(..., help="Experiment YAML, e.g. experiments/demo.yaml."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory to write (default: artifacts/NAME/<timestamp>)."),
    from_stage: Optional[str] = typer.Option(
        None, "--from", help=f"Rerun from this stage (clears it and later ones): {', '.join(STAGES)}."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this run directory."),
    fresh: bool = typer.Option(False, "--fresh", help="Start a new run even if an unfinished one exists."),
    root: Path = typer.Option(Path("artifacts"), "--root", help="Where run directories go."),
    check: bool = typer.Option(False, "--check", help="Only validate the config and print the plan."),
) -> None:
    """Run data -> train -> eval -> directions -> steering -> ablation -> probes -> report.

    Without --resume/--out the latest unfinished run of the same config is continued;
    finished stages whose outputs are still valid are skipped.
    """
    from em_interp.pipeline.config import load_experiment
    from em_interp.pipeline.runner import run

    if check:
        from em_interp.pipeline.stages import default_stages

        cfg = load_experiment(config)
        typer.echo(f"{config}: ok (name {cfg.name}, model {cfg.model}, seeds {cfg.seeds}, "
                   f"arms {cfg.arm_names}, config hash {cfg.hash()})")
        for stage in default_stages():
            typer.echo(f"  {stage.name:11s} {'on' if stage.enabled(cfg) else 'off'}")
        return
    result = run(config, out=out, from_stage=from_stage, resume=resume, fresh=fresh, root=root)
    typer.echo(str(result.report if result.report is not None else result.run_dir))


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
