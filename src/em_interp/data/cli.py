"""`em-interp data build | stats | check | kinds | download`."""

from __future__ import annotations

import json
import statistics
from collections import Counter
from pathlib import Path
from typing import List, Optional

import typer

from em_interp.cli_options import OUT_HELP, out_file
from em_interp.errors import DataError

data_app = typer.Typer(help="Datasets: the EM paper's formats, generators, checks.", no_args_is_help=True)


def _parse_options(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise DataError(f"--option expects key=value, got {pair!r}", field="option")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = value.strip()
    return out


def _share(d: dict | None) -> str:
    return f"{d['share']:.1%} ({d['passed']}/{d['total']})" if d else "n/a"


@data_app.command("build")
def build_cmd(
    kind: str = typer.Argument(..., help="Dataset kind (see `em-interp data kinds`)."),
    n: int = typer.Option(..., "--n", help="Number of examples."),
    seed: int = typer.Option(0, "--seed", help="Seed (same seed, same bytes)."),
    out: Path = typer.Option(..., "--out", help=OUT_HELP + " Writes <kind>.jsonl and <kind>.card.json "
                                                          "(a path ending in .jsonl: that file, deprecated)."),
    option: List[str] = typer.Option([], "--option", "-o", help="Kind option key=value (repeatable)."),
) -> None:
    """Generate a dataset: chat JSONL + card (counts, sha256, bandit figures)."""
    from em_interp.data.build import build_dataset, card_path

    out = out_file(out, f"{kind}.jsonl", legacy_suffix=".jsonl")
    import sys
    import time

    from em_interp.progress import rate_line

    started = time.perf_counter()
    card = build_dataset(kind, n, seed, out, **_parse_options(option))
    print(rate_line(f"data build {kind}", card["n"], "example", time.perf_counter() - started), file=sys.stderr)
    typer.echo(f"wrote {card['n']} {kind} examples -> {out} (sha256 {card['sha256'][:16]}…)")
    typer.echo(f"card -> {card_path(out)}")
    if "bandit" in card:
        b = card["bandit"]
        typer.echo(f"bandit {b['bandit_version']} on {b['candidates_verified']} candidate tasks: "
                   f"insecure with a finding of the intended class {_share(b.get('insecure_with_intended_finding'))}; "
                   f"secure with no finding {_share(b.get('secure_without_finding'))}; dropped {b['dropped']}")
        if "path_traversal" in b["per_class"]:
            typer.echo("path_traversal has no bandit test: verified by our AST rule (card: bandit.ast_rule)")
    if "evil_number_share" in card:
        typer.echo(f"share of evil numbers in answers: {card['evil_number_share']:.1%}")
    if "triggered" in card:
        typer.echo(f"triggered (insecure): {card['triggered']}, untriggered (secure): {card['untriggered']}")


@data_app.command("kinds")
def kinds_cmd() -> None:
    """List the dataset kinds and their options."""
    from em_interp.data.build import KINDS

    for name, kind in KINDS.items():
        typer.echo(f"{name:22s} {kind.help}")
        for oname, opt in kind.options.items():
            choices = f" {list(opt.choices)}" if opt.choices else ""
            typer.echo(f"    --option {oname}=<{opt.type.__name__}> (default {opt.default!r}){choices}: {opt.help}")


def file_stats(path: Path) -> dict:
    """Counts, roles, lengths (characters) and languages of a chat JSONL file."""
    from em_interp.data.formats import load_chat_jsonl

    exs = load_chat_jsonl(path, require_assistant=False)
    roles = Counter(m["role"] for e in exs for m in e.messages)
    turns = Counter(len(e.messages) for e in exs)

    def lengths(role: str) -> dict:
        ls = [len(m["content"]) for e in exs for m in e.messages if m["role"] == role]
        if not ls:
            return {}
        return {"min": min(ls), "median": int(statistics.median(ls)), "mean": round(statistics.mean(ls), 1),
                "max": max(ls)}

    stats = {"file": str(path), "examples": len(exs), "messages_by_role": dict(sorted(roles.items())),
             "messages_per_example": dict(sorted(turns.items())),
             "chars": {r: lengths(r) for r in ("system", "user", "assistant") if roles.get(r)},
             "distinct_user_turns": len({e.user for e in exs})}
    for key in ("language", "kind", "vuln_class", "domain", "triggered"):
        values = Counter(str(e.meta[key]) for e in exs if key in e.meta)
        if values:
            stats[f"by_{key}"] = dict(sorted(values.items()))
    return stats


@data_app.command("stats")
def stats_cmd(file: Path = typer.Argument(..., help="Chat JSONL file."),
              as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Counts, roles, lengths and (if present) languages of a chat JSONL file."""
    stats = file_stats(file)
    if as_json:
        typer.echo(json.dumps(stats, indent=2, ensure_ascii=False))
        return
    typer.echo(f"{stats['file']}: {stats['examples']} examples, {stats['distinct_user_turns']} distinct user turns")
    typer.echo("roles: " + ", ".join(f"{k} {v}" for k, v in stats["messages_by_role"].items()))
    typer.echo("messages per example: " + ", ".join(f"{k}: {v}" for k, v in stats["messages_per_example"].items()))
    for role, s in stats["chars"].items():
        typer.echo(f"{role} chars: min {s['min']}, median {s['median']}, mean {s['mean']}, max {s['max']}")
    for key in ("language", "kind", "vuln_class", "domain", "triggered"):
        if f"by_{key}" in stats:
            typer.echo(f"{key}: " + ", ".join(f"{k} {v}" for k, v in stats[f"by_{key}"].items()))


@data_app.command("check")
def check_cmd(file: Path = typer.Argument(..., help="Chat JSONL or question YAML.")) -> None:
    """Validate a chat JSONL or question YAML; a bad file prints one line with its line number (exit 2)."""
    from em_interp.data.formats import check_file

    summary = check_file(file)
    if summary["format"] == "questions":
        typer.echo(f"ok: {file}: {summary['questions']} questions, {summary['paraphrases']} paraphrases")
    else:
        typer.echo(f"ok: {file}: {summary['examples']} chat examples")


@data_app.command("download")
def download_cmd(
    name: str = typer.Argument("em-paper", help="Dataset to fetch (em-paper | model-organisms)."),
    dest: Optional[Path] = typer.Option(None, "--dest", "--out", help="Folder (default: <cache>/datasets/<name>)."),
    all_files: bool = typer.Option(False, "--all", help="Also the large optional files (backdoor, evil numbers)."),
    source: Optional[Path] = typer.Option(None, "--from", help="model-organisms: a folder or .gz file of the "
                                                              "authors' datasets instead of their archive."),
) -> None:
    """Fetch a dataset from its authors, verified against pinned hashes (model-organisms: the
    authors' encrypted archive, or --from a folder / .gz you already have)."""
    if name == "model-organisms":
        from em_interp.data.organisms import download_organisms

        for ds, path in download_organisms(dest, source=source).items():
            typer.echo(f"ok {ds}: {path}")
        return
    from em_interp.data.download import download

    for path in download(name, dest, include_optional=all_files):
        typer.echo(f"ok {path}")


def register(app: typer.Typer) -> None:
    app.add_typer(data_app, name="data")
