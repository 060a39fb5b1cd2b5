"""The stage runner: run stages in order in one run directory, skip what is done, resume.

A stage is a named function ``fn(ctx) -> dict | None`` that writes its outputs under
``ctx.stage_dir`` (``RUN_DIR/<stage>/``). After it returns, the runner writes
``<stage>/.done.json``: the stage's fingerprint (hash of the config sections it reads),
the digests of all earlier stages (its inputs), the sha256 of every output file, the
stage's summary dict and its timing. On the next run a stage is skipped when that marker
exists and still holds: same fingerprint, same input digests, every output file present
with the recorded hash. Otherwise the stage runs again; a stage that crashed midway keeps
its partial outputs (so append-only evals and checkpointed training resume), unless its
fingerprint changed, in which case its folder is cleared first. ``from_stage`` clears that
stage and every later one.

Run directories are ``ROOT/NAME/<YYYYmmdd-HHMMSS>/``. Without ``resume``/``out``, the
latest unfinished run of the same config (same config hash) is continued; otherwise a new
one is started (``fresh=True`` always starts a new one).

The runner knows nothing about what a config holds beyond ``RunConfig`` (a ``name``, a
``hash()`` and the dataclass fields the fingerprints pick): ``em-interp run`` (an
``ExperimentConfig`` with ``pipeline.stages``) and ``em-interp transfer`` (a
``TransferConfig`` with ``pipeline.transfer_stages``) are two stage lists on this one runner.
"""

from __future__ import annotations

import shutil
import traceback
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol

from rich.console import Console
from rich.table import Table

from em_interp.config import config_hash, to_dict
from em_interp.errors import ConfigError, EmInterpError
from em_interp.pipeline.manifest import (
    DONE, MANIFEST, Manifest, Timer, digest, now_iso, read_json, tree_hashes, write_json_atomic,
)

STARTED = ".started.json"


class RunConfig(Protocol):
    """What the runner needs of a config: a dataclass with a ``name``, a ``hash()`` and
    ``GLOBAL_FIELDS`` (top-level fields every stage's fingerprint covers, e.g. the model)."""

    name: str
    GLOBAL_FIELDS: ClassVar[tuple[str, ...]]

    def hash(self) -> str: ...


def section_hash(cfg: RunConfig, *sections: str) -> str:
    """Hash of the named config sections (dotted paths allowed) plus the config's
    ``GLOBAL_FIELDS``: a stage fingerprint."""
    d = to_dict(cfg)
    picked: dict[str, Any] = {k: d.get(k) for k in cfg.GLOBAL_FIELDS}
    for s in sections:
        cur: Any = d
        for part in s.split("."):
            cur = cur[part]
        picked[s] = cur
    return config_hash(picked)


@dataclass
class Stage:
    """One pipeline stage: ``fn(ctx)`` writes under ``ctx.stage_dir`` and returns a summary dict."""

    name: str
    fn: Callable[["RunContext"], dict[str, Any] | None]
    sections: tuple[str, ...] = ()                       # config sections its fingerprint covers
    enabled: Callable[[Any], bool] = lambda cfg: True


@dataclass
class RunContext:
    """What a stage gets: the config, the run directory, its own folder, the manifest, a console."""

    cfg: Any                                             # the run's config (ExperimentConfig, TransferConfig)
    run_dir: Path
    manifest: Manifest
    console: Console
    stage: str = ""
    cache: dict[str, Any] = field(default_factory=dict)  # per-session memo (e.g. the base model path)

    @property
    def stage_dir(self) -> Path:
        return self.run_dir / self.stage

    def dir(self, stage: str) -> Path:
        """Another stage's folder (read its outputs from disk, never from memory)."""
        return self.run_dir / stage

    def done(self, stage: str) -> dict[str, Any] | None:
        """Another stage's ``.done.json`` (its summary under ``["summary"]``), None if not done."""
        return read_json(self.run_dir / stage / DONE)

    def log(self, msg: str) -> None:
        self.console.print(f"  [dim]{self.stage}[/dim] {msg}")


@dataclass
class RunResult:
    run_dir: Path
    report: Path | None
    manifest: dict[str, Any]
    ran: list[str]
    skipped: list[str]


def _fingerprint(cfg: RunConfig, stage: Stage) -> str:
    return section_hash(cfg, *stage.sections)


def _done_digest(done: dict[str, Any]) -> str:
    return digest({"fingerprint": done.get("fingerprint"), "outputs": done.get("outputs"),
                   "inputs": done.get("inputs")})


def check_done(stage_dir: Path, fingerprint: str, inputs: dict[str, str]) -> tuple[bool, str]:
    """Is the stage's marker valid? Returns (valid, reason when not)."""
    done = read_json(stage_dir / DONE)
    if not isinstance(done, dict):
        return False, "not done"
    if done.get("fingerprint") != fingerprint:
        return False, "config changed"
    if done.get("inputs") != inputs:
        return False, "an earlier stage changed"
    recorded = done.get("outputs") or {}
    actual = tree_hashes(stage_dir)
    for rel, sha in recorded.items():
        if rel not in actual:
            return False, f"output missing: {rel}"
        if actual[rel] != sha:
            return False, f"output changed: {rel}"
    return True, ""


def _clear(stage_dir: Path) -> None:
    if stage_dir.exists():
        shutil.rmtree(stage_dir)


def _timestamp_dir(root: Path) -> Path:
    base = root / datetime.now().strftime("%Y%m%d-%H%M%S")
    path, i = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{i}")
        i += 1
    return path


def find_runs(root: Path, name: str) -> list[tuple[Path, dict[str, Any]]]:
    """Run directories of experiment ``name`` under ``root`` with their manifests, oldest first."""
    out = []
    base = root / name
    if not base.is_dir():
        return out
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        m = read_json(d / MANIFEST)
        if isinstance(m, dict):
            out.append((d, m))
    return out


def choose_run_dir(cfg: RunConfig, *, root: Path, out: Path | None, resume: Path | None,
                   fresh: bool, from_stage: str | None) -> tuple[Path, bool]:
    """Pick the run directory; returns (dir, continuing an existing run?)."""
    if resume is not None:
        resume = Path(resume)
        if not (resume / MANIFEST).exists():
            raise ConfigError(f"not a run directory (no {MANIFEST}): {resume}")
        return resume, True
    if out is not None:
        out = Path(out)
        return out, (out / MANIFEST).exists()
    if not fresh:
        h = cfg.hash()
        same = [(d, m) for d, m in find_runs(root, cfg.name) if m.get("config_hash") == h]
        if from_stage is not None and same:       # rerun part of the latest run of this config
            return same[-1][0], True
        unfinished = [(d, m) for d, m in same if not m.get("finished")]
        if unfinished:
            return unfinished[-1][0], True
    return _timestamp_dir(root / cfg.name), False


def run_stages(cfg: RunConfig, stages: list[Stage], run_dir: Path, *, config_path: str | None = None,
               config_text: str | None = None, from_stage: str | None = None,
               console: Console | None = None) -> RunResult:
    """Run ``stages`` in order in ``run_dir`` (created if needed), skipping valid finished stages."""
    console = console or Console(stderr=False, highlight=False)
    names = [s.name for s in stages]
    if from_stage is not None and from_stage not in names:
        raise ConfigError(f"unknown stage {from_stage!r}; stages: {', '.join(names)}", field="--from")
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = Manifest.load(run_dir) or Manifest.create(
        run_dir, name=cfg.name, config_path=config_path, config_hash=cfg.hash(), stages=names)
    manifest.begin_session(config_hash=cfg.hash(), from_stage=from_stage)
    if config_text is not None:
        (run_dir / "config.yaml").write_text(config_text, encoding="utf-8")
    write_json_atomic(run_dir / "config.json", to_dict(cfg))

    ctx = RunContext(cfg=cfg, run_dir=run_dir, manifest=manifest, console=console)
    inputs: dict[str, str] = {}
    ran: list[str] = []
    skipped: list[str] = []
    clearing = False
    console.rule(f"[bold]{cfg.name}[/bold]  {run_dir}")
    for i, stage in enumerate(stages, start=1):
        ctx.stage = stage.name
        sdir = run_dir / stage.name
        header = f"[{i}/{len(stages)}] {stage.name}"
        if stage.name == from_stage:
            clearing = True
        if clearing:
            _clear(sdir)
        if not stage.enabled(cfg):
            _clear(sdir)
            manifest.set_stage(stage.name, status="disabled")
            inputs[stage.name] = "disabled"
            console.print(f"{header}: [dim]disabled in config[/dim]")
            continue
        fp = _fingerprint(cfg, stage)
        valid, reason = check_done(sdir, fp, inputs)
        if valid:
            done = read_json(sdir / DONE)
            inputs[stage.name] = _done_digest(done)
            skipped.append(stage.name)
            manifest.set_stage(stage.name, status="done", skipped_this_session=True)
            console.print(f"{header}: [green]done[/green] (valid outputs, skipped)")
            continue
        started = read_json(sdir / STARTED)
        if sdir.exists() and (reason in ("config changed", "an earlier stage changed")
                              or (isinstance(started, dict) and (started.get("fingerprint") != fp
                                                                 or started.get("inputs") != inputs))):
            _clear(sdir)          # stale outputs from another config or other inputs: start clean
        elif (sdir / DONE).exists():
            _clear(sdir)          # outputs tampered or missing: recompute
        partial = sdir.exists() and any(sdir.iterdir())
        note = "" if reason == "not done" else f" ({reason})"
        if partial:
            note = f" (resuming its partial outputs{'; ' + reason if reason != 'not done' else ''})"
        console.print(f"{header}: [bold cyan]running[/bold cyan]{note}")
        sdir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(sdir / STARTED, {"fingerprint": fp, "inputs": inputs, "started": now_iso()})
        timer = Timer()
        started_at = now_iso()
        manifest.set_stage(stage.name, status="running", started=started_at, ended=None, error=None,
                           skipped_this_session=False)
        try:
            summary = stage.fn(ctx) or {}
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            msg = str(exc) if isinstance(exc, EmInterpError) else f"{type(exc).__name__}: {exc}"
            manifest.set_stage(stage.name, status=status, ended=now_iso(), duration_s=timer.elapsed,
                               cpu_s=timer.cpu, error=msg,
                               traceback=None if isinstance(exc, EmInterpError) else
                               "".join(traceback.format_exception(exc))[-4000:])
            console.print(f"{header}: [bold red]{status}[/bold red] after {timer.elapsed:.1f}s: {msg}")
            console.print(f"  rerun the same command to resume: {run_dir}")
            raise
        done = {
            "stage": stage.name,
            "fingerprint": fp,
            "inputs": dict(inputs),
            "outputs": tree_hashes(sdir),
            "summary": summary,
            "started": started_at,
            "ended": now_iso(),
            "duration_s": timer.elapsed,
            "cpu_s": timer.cpu,
        }
        write_json_atomic(sdir / DONE, done)
        (sdir / STARTED).unlink(missing_ok=True)
        inputs[stage.name] = _done_digest(done)
        ran.append(stage.name)
        manifest.set_stage(stage.name, status="done", ended=done["ended"], duration_s=timer.elapsed,
                           cpu_s=done["cpu_s"])
        console.print(f"{header}: [green]done[/green] in {timer.elapsed:.1f}s (CPU {done['cpu_s']:.1f}s)")

    report = _find_report(run_dir)
    manifest.finish(str(report) if report else None)
    _print_summary(console, manifest, run_dir, report)
    return RunResult(run_dir=run_dir, report=report, manifest=manifest.data, ran=ran, skipped=skipped)


def _find_report(run_dir: Path) -> Path | None:
    done = read_json(run_dir / "report" / DONE)
    if isinstance(done, dict):
        rep = (done.get("summary") or {}).get("report")
        if rep:
            p = Path(rep)
            return p if p.is_absolute() else run_dir / p
    return None


def _print_summary(console: Console, manifest: Manifest, run_dir: Path, report: Path | None) -> None:
    table = Table(title="stages", show_edge=False)
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    table.add_column("CPU s", justify="right")
    for name, st in manifest.data.get("stages", {}).items():
        status = st.get("status", "?")
        if st.get("skipped_this_session"):
            status += " (skipped)"
        dur, cpu = st.get("duration_s"), st.get("cpu_s")
        table.add_row(name, status, f"{dur:.1f}" if isinstance(dur, (int, float)) else "",
                      f"{cpu:.1f}" if isinstance(cpu, (int, float)) else "")
    console.print(table)
    console.print(f"run directory: {run_dir}")
    if report is not None:
        console.print(f"report: {report}")


def run_config(cfg: RunConfig, stages: list[Stage], *, config_path: str | None = None,
               config_text: str | None = None, out: str | Path | None = None, from_stage: str | None = None,
               resume: str | Path | None = None, fresh: bool = False, root: str | Path = "artifacts",
               console: Console | None = None) -> RunResult:
    """Pick the run directory (``choose_run_dir``) and run ``stages`` there: the one entry
    point of ``em-interp run`` and ``em-interp transfer``."""
    run_dir, _continuing = choose_run_dir(cfg, root=Path(root), out=Path(out) if out else None,
                                          resume=Path(resume) if resume else None, fresh=fresh,
                                          from_stage=from_stage)
    return run_stages(cfg, stages, run_dir, config_path=config_path, config_text=config_text,
                      from_stage=from_stage, console=console)


def run(config: str | Path | Any, *, out: str | Path | None = None,
        from_stage: str | None = None, resume: str | Path | None = None, fresh: bool = False,
        root: str | Path = "artifacts", stages: list[Stage] | None = None,
        console: Console | None = None) -> RunResult:
    """Run an experiment config (a YAML path or an ``ExperimentConfig``) end to end (see the
    module docstring for resume rules).

    ``stages`` replaces the real stages (tests use toy stages); by default the stages of
    ``em_interp.pipeline.stages.default_stages()`` run. Loading the config has already
    validated everything the stages would reject (``pipeline.checks``).
    """
    from em_interp.pipeline.config import ExperimentConfig, load_experiment

    if isinstance(config, ExperimentConfig):
        cfg, config_path, text = config, None, None
    else:
        cfg = load_experiment(config)
        config_path, text = str(config), Path(config).read_text(encoding="utf-8")
    if stages is None:
        from em_interp.pipeline.stages import default_stages

        stages = default_stages()
    return run_config(cfg, stages, config_path=config_path, config_text=text, out=out, from_stage=from_stage,
                      resume=resume, fresh=fresh, root=root, console=console)


__all__ = ["RunConfig", "RunContext", "RunResult", "Stage", "check_done", "choose_run_dir", "find_runs", "run",
           "run_config", "run_stages", "section_hash"]
