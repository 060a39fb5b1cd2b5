"""`em-interp report diff` (layer-wise base-vs-finetuned diff) and `em-interp report run RUN_DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from em_interp.cli_options import MAX_LENGTH_HELP, OUT_HELP, PROGRESS_HELP, deprecated_alias, with_progress
from em_interp.report.errors import ReportError

report_app = typer.Typer(help="Reports: layer-wise model diffs and experiment pages (HTML + Markdown + PNG).",
                         no_args_is_help=True)


def diff_cmd(
    base: str = typer.Option(..., "--base", help="Base model: registry name, hub id or folder."),
    texts: Path = typer.Option(..., "--texts", help="Chat JSONL ({'messages': ...} or {'text': ...} per line) "
                                                     "or a plain text file (one text per line)."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP + " Writes report.html, report.md, diff.json, figures/."),
    finetuned: Optional[str] = typer.Option(None, "--finetuned", help="Finetuned model (default: the base model, "
                                                                       "with --adapter)."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="peft adapter folder applied to the finetuned model."),
    direction: Optional[Path] = typer.Option(None, "--direction", help="A saved interp Direction (.safetensors)."),
    tokens: str = typer.Option("all", "--tokens", help="Average over 'all' tokens or only 'response' tokens."),
    batch_size: int = typer.Option(4, "--batch-size"),
    max_length: int = typer.Option(256, "--max-length", help=MAX_LENGTH_HELP),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", hidden=True, help="Deprecated: --max-length."),
    backend: str = typer.Option("hf", "--backend", help="interp backend: hf, transformer_lens or nnsight."),
    device: Optional[str] = typer.Option(None, "--device"),
    progress: Optional[bool] = typer.Option(None, "--progress/--no-progress", help=PROGRESS_HELP),
) -> None:
    """Per-layer residual-difference norms, cosines, logit-lens KL, attention vs MLP, LoRA delta norms."""
    from em_interp.models import load_model
    from em_interp.report.diff import diff_report

    if finetuned is None and adapter is None:
        raise ReportError("give --finetuned MODEL and/or --adapter FOLDER (otherwise both models are the base)")
    if not texts.is_file():
        raise ReportError("texts file not found", file=texts, field="--texts")
    base_lm = load_model(base, device=device)
    ft_lm = load_model(finetuned or base, adapter=adapter, device=device)
    paths = diff_report(base_lm, ft_lm, texts, out, direction=direction, adapter=adapter, batch_size=batch_size,
                        max_tokens=deprecated_alias("--max-length", "--max-tokens", max_length, max_tokens),
                        tokens=tokens, backend=backend)
    for key in ("json", "markdown", "html"):
        typer.echo(str(paths[key]))


report_app.command("diff")(with_progress(diff_cmd))


@report_app.command("run")
def run_cmd(
    run_dir: Path = typer.Argument(..., help="A pipeline run directory (artifacts/NAME/STAMP)."),
    out: Optional[Path] = typer.Option(None, "--out", help=OUT_HELP + " Default: RUN_DIR/report."),
) -> None:
    """One page for a run directory: config, eval table, steering, ablation, probes, dynamics, transfer."""
    from em_interp.report.experiment import experiment_report

    paths = experiment_report(run_dir, out)
    typer.echo(str(paths["markdown"]))
    typer.echo(str(paths["html"]))


def register(app: typer.Typer) -> None:
    app.add_typer(report_app, name="report")
