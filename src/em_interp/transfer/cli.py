"""`em-interp transfer CONFIG.yaml [--out DIR] [--device cpu|cuda] [--check]`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer


def transfer_cmd(
    config: Path = typer.Argument(..., help="Transfer experiment YAML (experiments/transfer_*.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: artifacts/transfer/<name>)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    check: bool = typer.Option(False, "--check", help="Only validate the config and print it."),
) -> None:
    """Cross-language / cross-format transfer: finetune per source, evaluate every target,
    transfer matrices with CIs, proximity correlation, per-language directions, figures.
    Resumes an interrupted run in the same folder."""
    from em_interp.config import to_dict
    from em_interp.transfer.config import load_transfer_config
    from em_interp.transfer.experiment import run_transfer

    cfg = load_transfer_config(config)
    if check:
        typer.echo(json.dumps(to_dict(cfg), indent=1, ensure_ascii=False))
        return
    run_dir = out or Path("artifacts") / "transfer" / cfg.name
    results = run_transfer(cfg, run_dir, device=device, log=lambda m: typer.echo(m, err=True))
    typer.echo(json.dumps({"run_dir": str(run_dir), "figures": results["figures"],
                           "correlation": {k: v["result"] for k, v in results["correlation"].items()}},
                          ensure_ascii=False, default=str))


def register(app: typer.Typer) -> None:
    app.command("transfer")(transfer_cmd)
