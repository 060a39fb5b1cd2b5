"""``train(config)``: supervised finetuning with an explicit loop on top of accelerate.

accelerate handles devices, bf16 autocast on GPU and multi-GPU (DDP) when launched
with ``accelerate launch``; the loop itself is small and explicit so that resume is
exact: the data order is a function of the seed, the state saved at each checkpoint
holds trainable weights, optimizer, scheduler and RNG, and a resumed run's final
adapter is bit-identical to an uninterrupted one on CPU.

One optimizer step consumes ``per_device_batch_size x gradient_accumulation_steps x
n_processes`` examples; the loss of a step is the mean over all its assistant tokens
(token-weighted across micro-batches, as HF's ``num_items_in_batch``).

Layout of ``output_dir``::

    adapter/                 final peft adapter (LoRA) | model/ for full finetuning
    checkpoints/step-N/      adapter (or model) every ``save_steps`` + checkpoint.json
    merged/                  base + adapter folded (``save_merged``)
    resume/                  latest resume state (see ``state``)
    train_meta.json          config, dataset sha256, base model, seed, steps, loss curve, tokens/s

Non-finite steps. A step whose loss or gradient norm is not finite is skipped: its
gradients are dropped, the weights and the AdamW moments stay as they were (the data and
the lr schedule move on, so a resumed run still lines up), and the step is recorded in
``train_meta.json`` (``skipped_nonfinite_steps``) and logged as a warning. More than
``NONFINITE_STEP_LIMIT`` such steps in a run raise ``TrainError``. Without this check one
NaN gradient (finite loss) went through clipping into the weights and surfaced as a NaN
loss one step later.

Attention. On CUDA, SDPA's cuDNN backend is off for the training forward/backward: its
backward returns NaN ``grad_q`` when an attention mask is passed (every right-padded
batch), the width is 64 mod 128 and a head's logsumexp is below ln(FLT_MAX) (~ -88.7),
which Qwen2.5's massive-activation heads reach (pytorch/pytorch#196678; the real
Qwen2.5-Coder-0.5B has heads at -490). Memory-efficient attention takes over for masked
batches; nothing changes on CPU.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import platform
import shutil
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from em_interp.config import to_dict
from em_interp.errors import TrainError
from em_interp.models.adapters import record_adapter_base
from em_interp.train import state as resume_state
from em_interp.train.batching import collate, epoch_batches
from em_interp.train.config import TrainConfig
from em_interp.train.encode import Encoded, encode_dataset
from em_interp.train.loss import supervised_loss_sum
from em_interp.train.trainable import make_trainable, trainable_parameters

META_FILE = "train_meta.json"
log = logging.getLogger(__name__)
# Config fields that may change between a run and its resume.
_RESUME_FREE_FIELDS = {"output_dir", "progress", "logging_steps", "save_merged"}
# A run may skip this many non-finite steps (loss or gradient norm); one more raises TrainError.
NONFINITE_STEP_LIMIT = 5


@dataclass
class TrainResult:
    """Where a run's artifacts are. ``adapter_dir`` is None for full finetuning (see ``model_dir``)."""

    output_dir: Path
    adapter_dir: Path | None
    checkpoints: list[Path]
    metadata: dict[str, Any]
    model_dir: Path | None = None      # full finetune weights, or merged/ when saved
    skipped: bool = False              # True when --resume found the run already finished


@dataclass
class _Data:
    examples: list[tuple[int, list[dict]]]   # (line, messages)
    sha256: str
    source: str | None


def _load_examples(cfg: TrainConfig, examples: Sequence[Any] | None) -> _Data:
    """Examples from ``examples`` (ChatExample or {"messages": ...}) or ``cfg.data`` (chat JSONL)."""
    if examples is not None:
        pairs = []
        for i, ex in enumerate(examples):
            messages = ex.get("messages") if isinstance(ex, dict) else getattr(ex, "messages", None)
            pairs.append((i + 1, messages))
        blob = json.dumps([m for _, m in pairs], sort_keys=True, ensure_ascii=False).encode()
        return _Data(pairs, hashlib.sha256(blob).hexdigest(), None)
    if not cfg.data:
        raise TrainError("no training data: set 'data' (a chat JSONL path) or pass examples", field="data")
    from em_interp.data import load_chat_jsonl

    path = Path(cfg.data)
    loaded = load_chat_jsonl(path)  # validates every line (DataError names file:line:field)
    raw = path.read_bytes()
    lines = [n for n, text in enumerate(raw.decode("utf-8").splitlines(), start=1) if text.strip()]
    pairs = [(line, ex.messages) for line, ex in zip(lines, loaded)]
    return _Data(pairs, hashlib.sha256(raw).hexdigest(), str(path))


def _fingerprint(cfg: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in to_dict(cfg).items() if k not in _RESUME_FREE_FIELDS}


def _existing_result(out: Path) -> TrainResult:
    meta = json.loads((out / META_FILE).read_text())
    adapter = out / "adapter"
    model_dir = out / "model" if (out / "model").exists() else (out / "merged" if (out / "merged").exists() else None)
    return TrainResult(out, adapter if adapter.exists() else None, _checkpoints(out), meta, model_dir, skipped=True)


def _checkpoints(out: Path) -> list[Path]:
    folder = out / "checkpoints"
    if not folder.exists():
        return []
    return sorted((p for p in folder.iterdir() if p.name.startswith("step-")), key=lambda p: int(p.name[5:]))


def _prepare_output(cfg: TrainConfig, resume: bool) -> tuple[Path, bool]:
    """Check the output folder. Returns (path, already_finished)."""
    out = Path(cfg.output_dir)
    finished = (out / META_FILE).exists() and json.loads((out / META_FILE).read_text()).get("finished", False)
    if finished:
        if resume:
            return out, True
        raise TrainError("output folder already holds a finished run; choose another --out", file=out)
    if resume_state.has_state(out) and not resume:
        raise TrainError("output folder holds a partial run; pass --resume to continue it or choose another "
                         "--out", file=out)
    if not resume and out.exists() and any(out.iterdir()):
        raise TrainError("output folder is not empty; choose another --out", file=out)
    out.mkdir(parents=True, exist_ok=True)
    return out, False


def _make_optimizer(model: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = trainable_parameters(model)
    decay = [p for p in params.values() if p.ndim >= 2]
    no_decay = [p for p in params.values() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_epsilon)


def _make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    from transformers import get_scheduler

    return get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=cfg.warmup_steps,
                         num_training_steps=total_steps)


def _step_plan(encoded: list[Encoded], cfg: TrainConfig, n_processes: int) -> list[list[list[int]]]:
    """All optimizer steps of the run: each a list of micro-batches (example indices),
    ``accumulation x n_processes`` of them (fewer in the last step)."""
    lengths = [len(e.input_ids) for e in encoded]
    if not lengths:
        return []
    per_step = cfg.gradient_accumulation_steps * n_processes
    micro: list[list[int]] = []
    epoch = 0
    # max_steps overrides epochs (HF semantics): cycle epochs until the run has max_steps steps.
    while epoch < cfg.epochs if cfg.max_steps is None else len(micro) < cfg.max_steps * per_step:
        micro.extend(epoch_batches(lengths, cfg.per_device_batch_size, seed=cfg.seed, epoch=epoch,
                                   group_by_length=cfg.group_by_length))
        epoch += 1
    steps = [micro[i:i + per_step] for i in range(0, len(micro), per_step)]
    return steps[:cfg.max_steps] if cfg.max_steps is not None else steps


@contextlib.contextmanager
def _no_cudnn_attention():
    """Inside, SDPA picks flash / memory-efficient / math attention but never cuDNN (the
    backward runs the kernel chosen at forward time). See the module docstring."""
    was = torch.backends.cuda.cudnn_sdp_enabled()
    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        yield
    finally:
        torch.backends.cuda.enable_cudnn_sdp(was)


def _grad_norm(params: dict[str, torch.Tensor]) -> float:
    """The total L2 norm of the trainable gradients (nan/inf when any is not finite). Under
    DDP the gradients are already averaged, so every process gets the same number."""
    grads = [p.grad for p in params.values() if p.grad is not None]
    return float(torch.nn.utils.get_total_norm(grads)) if grads else 0.0


def _json_number(x: float) -> float | str:
    """``x``, or ``"nan"`` / ``"inf"`` / ``"-inf"`` (train_meta.json stays strict JSON)."""
    return round(x, 6) if math.isfinite(x) else str(x)


def _versions() -> dict[str, str]:
    import accelerate
    import peft
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
            "accelerate": accelerate.__version__, "python": platform.python_version()}


def _save_weights(model: Any, folder: Path, tokenizer: Any, full: bool, organism: str | None = None) -> None:
    model.save_pretrained(str(folder), safe_serialization=True)
    if not full:  # the adapter records its base: registry name, hub id, GGUF source, weights fingerprint
        record_adapter_base(folder, model, organism=organism)
    if full:
        tokenizer.save_pretrained(str(folder))


def train(config: TrainConfig, *, examples: Sequence[Any] | None = None, resume: bool = False,
          on_step: Callable[[dict[str, Any]], None] | None = None) -> TrainResult:
    """Finetune ``config.model`` on ``config.data`` (or ``examples``) and write ``config.output_dir``.

    ``resume=True`` continues a partial run from its last checkpoint (or returns the
    finished run untouched). ``on_step(info)`` is called after every optimizer step
    (after any checkpoint of that step is written) with step, loss, lr, tokens/s.
    All input checks (data, lengths, target modules, output folder) run before any
    training compute.
    """
    from accelerate import Accelerator

    from em_interp.models import load_model

    cfg = config
    out, finished = _prepare_output(cfg, resume)
    if finished:
        return _existing_result(out)
    data = _load_examples(cfg, examples)

    use_cuda = torch.cuda.is_available()
    mixed = "bf16" if (cfg.precision == "bf16" or (cfg.precision == "auto" and use_cuda)) else "no"
    accelerator = Accelerator(mixed_precision=mixed, cpu=not use_cuda)
    # a shipped organism (BASE+ADAPTER) is trained on with its adapter merged into the weights
    lm = load_model(cfg.model, device=str(accelerator.device), dtype=torch.float32, merge_adapter=True)
    organism = (lm.info.get("organism") or {}).get("name")
    tokenizer = lm.tokenizer
    encoded = encode_dataset(tokenizer, data.examples, max_seq_length=cfg.max_seq_length, source=data.source)

    torch.manual_seed(cfg.seed)
    model = make_trainable(lm.model, cfg, lm.n_layers)
    model.train()
    optimizer = _make_optimizer(model, cfg)
    plan = _step_plan(encoded, cfg, accelerator.num_processes)
    total_steps = len(plan)
    scheduler = _make_scheduler(optimizer, cfg, total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    params = trainable_parameters(accelerator.unwrap_model(model))
    n_trainable = sum(p.numel() for p in params.values())

    start_step, loss_curve, tokens_seen, train_s, resumed_from = 0, [], 0, 0.0, None
    skipped: list[dict[str, Any]] = []   # non-finite steps: not applied (see the module docstring)
    if resume and resume_state.has_state(out):
        saved = resume_state.read_state_info(out)
        if saved.get("fingerprint") != _fingerprint(cfg) or saved.get("dataset_sha256") != data.sha256:
            raise TrainError("cannot resume: the config or the dataset differ from the partial run's "
                             "(see resume/state.json)", file=out)
        info = resume_state.load_state(out, trainable=params, optimizer=optimizer.optimizer
                                       if hasattr(optimizer, "optimizer") else optimizer, scheduler=scheduler)
        start_step, loss_curve = info["step"], info["loss_curve"]
        tokens_seen, train_s, resumed_from = info["tokens_seen"], info["train_s"], info["step"]
        skipped = list(info.get("skipped_nonfinite_steps", []))   # absent in states saved before it existed

    rank, world = accelerator.process_index, accelerator.num_processes
    meta: dict[str, Any] = {
        "method": cfg.method, "base_model": cfg.model, "base_model_path": lm.path,
        "base_model_info": lm.info, "seed": cfg.seed, "config": to_dict(cfg),
        "dataset": data.source, "dataset_sha256": data.sha256, "n_examples": len(encoded),
        "n_tokens": sum(len(e.input_ids) for e in encoded),
        "n_label_tokens": sum(e.n_label_tokens for e in encoded),
        "total_steps": total_steps, "effective_batch_size": cfg.effective_batch_size * world,
        "trainable_params": n_trainable, "device": str(accelerator.device), "n_processes": world,
        "precision": "bf16-autocast" if mixed == "bf16" else "fp32", "versions": _versions(),
        "sdpa_cudnn": False, "nonfinite_step_limit": NONFINITE_STEP_LIMIT,
    }

    def write_meta(step: int, finished_: bool) -> None:
        if not accelerator.is_main_process:
            return
        meta.update(steps=step, finished=finished_, loss_curve=loss_curve, skipped_nonfinite_steps=skipped,
                    tokens_seen=tokens_seen,
                    train_s=round(train_s, 3), tokens_per_s=round(tokens_seen / train_s, 2) if train_s else None,
                    resumed_from_step=resumed_from,
                    checkpoints=[str(p.relative_to(out)) for p in _checkpoints(out)])
        tmp = out / (META_FILE + ".tmp")
        tmp.write_text(json.dumps(meta, indent=1, default=str))
        tmp.replace(out / META_FILE)

    def unwrapped() -> Any:
        return accelerator.unwrap_model(model)

    full = cfg.method == "full"
    bar = None
    if cfg.progress and accelerator.is_main_process:
        from em_interp.progress import Progress

        bar = Progress(total_steps, f"train seed {cfg.seed}", "step", progress=True, initial=start_step)
    for step_index in range(start_step, total_steps):
        t0 = time.perf_counter()
        micro = plan[step_index]
        mine = [b for i, b in enumerate(micro) if i % world == rank]
        batches = [collate([encoded[j] for j in b], tokenizer.pad_token_id) for b in mine]
        n_label = torch.tensor(float(sum(int((b["labels"] != -100).sum()) for b in batches)),
                               device=accelerator.device)
        n_label_all = accelerator.reduce(n_label, reduction="sum").item() if world > 1 else n_label.item()
        step_tokens = sum(int(b["attention_mask"].sum()) for b in batches)
        loss_sum = 0.0
        for k, batch in enumerate(batches):
            batch = {key: v.to(accelerator.device) for key, v in batch.items()}
            labels = batch.pop("labels")
            sync = k == len(batches) - 1
            ctx = accelerator.no_sync(model) if not sync and world > 1 else contextlib.nullcontext()
            with ctx, accelerator.autocast(), _no_cudnn_attention():
                # LM head + cross-entropy at supervised positions only, chunked (train/loss.py).
                token_loss = supervised_loss_sum(model, batch, labels)
                loss = token_loss / n_label_all * world  # DDP averages gradients over processes
                accelerator.backward(loss)
            loss_sum += token_loss.item()
        if world > 1:
            loss_sum = accelerator.reduce(torch.tensor(loss_sum, device=accelerator.device), "sum").item()
            step_tokens = int(accelerator.reduce(torch.tensor(step_tokens, device=accelerator.device), "sum"))
        step = step_index + 1
        step_loss = loss_sum / max(n_label_all, 1.0)
        grad_norm = _grad_norm(params)
        lr = scheduler.get_last_lr()[0]
        applied = math.isfinite(step_loss) and math.isfinite(grad_norm)
        if world > 1:  # one decision on every process, whatever each one's gradients hold
            bad = torch.tensor(0.0 if applied else 1.0, device=accelerator.device)
            applied = accelerator.reduce(bad, reduction="sum").item() == 0
        if applied:
            if cfg.max_grad_norm is not None:
                accelerator.clip_grad_norm_(list(params.values()), cfg.max_grad_norm)
            optimizer.step()
        else:  # before the update: the weights, the optimizer moments and the checkpoints stay good
            skipped.append({"step": step, "loss": _json_number(step_loss), "grad_norm": _json_number(grad_norm),
                            "lr": lr})
            what = "loss" if not math.isfinite(step_loss) else "gradient norm"
            value = step_loss if not math.isfinite(step_loss) else grad_norm
            if accelerator.is_main_process:
                log.warning("step %d/%d: the %s is %s (loss %s, gradient norm %s); skipped this update "
                            "(%d non-finite step(s) so far, limit %d)", step, total_steps, what, value,
                            step_loss, grad_norm, len(skipped), NONFINITE_STEP_LIMIT)
            if len(skipped) > NONFINITE_STEP_LIMIT:
                last = _checkpoints(out)
                write_meta(step_index, False)   # records the skipped steps; the run stays resumable
                raise TrainError(f"the {what} is {value} at step {step}: {len(skipped)} steps with a non-finite "
                                 f"loss or gradient norm (steps {', '.join(str(x['step']) for x in skipped)}), "
                                 f"more than the limit of {NONFINITE_STEP_LIMIT}; stopped before updating the "
                                 f"weights (last good checkpoint: {last[-1] if last else 'none'}); lower lr or "
                                 f"check the data", file=out)
        with warnings.catch_warnings():  # a skipped first step: torch warns of step() before optimizer.step()
            warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)` before")
            scheduler.step()   # also when skipped: the schedule follows the data order, as resume expects
        optimizer.zero_grad(set_to_none=True)
        train_s += time.perf_counter() - t0
        tokens_seen += step_tokens
        if applied:
            loss_curve.append({"step": step, "loss": round(step_loss, 6), "lr": lr})
        tok_s = tokens_seen / train_s if train_s else 0.0
        logged = applied and (step % cfg.logging_steps == 0 or step == total_steps)  # skipped: the warning
        if bar is not None:
            bar.update(1, tokens=step_tokens)
            if logged:
                bar.bar.set_postfix_str(f"loss {step_loss:.4f}, {tok_s:.0f} tok/s")
        elif accelerator.is_main_process and logged:
            log.info("step %d/%d loss %.4f lr %.3g tokens/s %.1f", step, total_steps, step_loss, lr, tok_s)
        if cfg.save_steps and step % cfg.save_steps == 0:
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                folder = out / "checkpoints" / f"step-{step}"
                _save_weights(unwrapped(), folder, tokenizer, full, organism)
                (folder / "checkpoint.json").write_text(json.dumps(
                    {"step": step, "loss": step_loss, "lr": lr, "tokens_seen": tokens_seen,
                     "base_model": cfg.model, "seed": cfg.seed, "dataset_sha256": data.sha256}, indent=1))
                resume_state.save_state(out, trainable=params, optimizer=getattr(optimizer, "optimizer", optimizer),
                                        scheduler=scheduler, info={
                                            "step": step, "loss_curve": loss_curve, "tokens_seen": tokens_seen,
                                            "skipped_nonfinite_steps": skipped,
                                            "train_s": train_s, "fingerprint": _fingerprint(cfg),
                                            "dataset_sha256": data.sha256})
                write_meta(step, False)
        if on_step is not None:
            on_step({"step": step, "total_steps": total_steps, "loss": step_loss, "lr": lr, "tokens_per_s": tok_s,
                     "grad_norm": grad_norm, "skipped": not applied})
    if bar is not None:
        bar.close()
    if skipped and accelerator.is_main_process:
        log.warning("%d of %d steps were skipped for a non-finite loss or gradient norm: steps %s "
                    "(train_meta.json: skipped_nonfinite_steps)", len(skipped), total_steps,
                    ", ".join(str(x["step"]) for x in skipped))

    accelerator.wait_for_everyone()
    adapter_dir = model_dir = None
    if accelerator.is_main_process:
        final = unwrapped()
        if full:
            model_dir = out / "model"
            _save_weights(final, model_dir, tokenizer, True)
        else:
            adapter_dir = out / "adapter"
            _save_weights(final, adapter_dir, tokenizer, False, organism)
            if cfg.save_merged:
                model_dir = out / "merged"
                merged = final.merge_and_unload()
                _save_weights(merged, model_dir, tokenizer, True)
        write_meta(total_steps, True)
        resume_state.clear_state(out)  # only needed by unfinished runs
    return TrainResult(out, adapter_dir, _checkpoints(out), meta, model_dir)


def train_seeds(config: TrainConfig, seeds: Sequence[int], *, examples: Sequence[Any] | None = None,
                resume: bool = False) -> list[TrainResult]:
    """One run per seed, in ``<output_dir>/seed-<s>/``; with ``resume`` finished seeds are skipped."""
    if not seeds:
        raise TrainError("no seeds given", field="seeds")
    if len(set(seeds)) != len(seeds):
        raise TrainError(f"duplicate seeds in {list(seeds)}", field="seeds")
    base = Path(config.output_dir)
    return [train(config.for_seed(s, base / f"seed-{s}"), examples=examples, resume=resume) for s in seeds]
