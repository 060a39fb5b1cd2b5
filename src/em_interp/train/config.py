"""``TrainConfig``: the typed, YAML-loadable settings of one finetuning run.

Defaults follow the EM paper's open-model recipe (Betley et al. 2025, Qwen/Mistral
runs): rsLoRA r=32, alpha=64, dropout 0 on all attention and MLP projections, lr 1e-5,
1 epoch, effective batch 16 (2 x 8 accumulation), linear schedule with 5 warmup steps,
weight decay 0.01, max length 2048. Rank-1 LoRA (Turner/Soligo et al.) is the same
method with ``lora.r: 1`` and ``lora.target_modules: [mlp.down_proj]`` on a few
``lora.layers``; see ``experiments/train_rank1.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from em_interp.config import check_number, load_config

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    """peft LoRA settings. ``target_modules`` are module-name suffixes (``down_proj``,
    ``mlp.down_proj``, ``self_attn.q_proj``); ``layers`` restricts them to those block
    indices (None = every layer)."""

    r: int = 32
    alpha: float = 64.0
    use_rslora: bool = True
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(ALL_PROJECTIONS))
    layers: list[int] | None = None
    bias: Literal["none", "all", "lora_only"] = "none"

    def __post_init__(self) -> None:
        check_number("lora.r", self.r, low=1, integer=True)
        check_number("lora.alpha", self.alpha, low=0, low_open=True)
        check_number("lora.dropout", self.dropout, low=0, high=1, high_open=True)
        if not self.target_modules:
            raise ValueError("lora.target_modules must name at least one module")
        for layer in self.layers or []:
            check_number("lora.layers[]", layer, low=0, integer=True)


@dataclass
class TrainConfig:
    """One finetuning run. ``data`` is a chat JSONL file (``{"messages": [...]}`` a line);
    ``output_dir`` receives ``adapter/``, ``checkpoints/step-N/``, ``train_meta.json``."""

    model: str = "smollm2-135m-instruct"      # registry name, hub id or local folder
    data: str | None = None                   # chat JSONL path (or pass examples to train())
    output_dir: str = "artifacts/train/run"
    method: Literal["lora", "full"] = "lora"
    lora: LoraSettings = field(default_factory=LoraSettings)
    seed: int = 0
    epochs: int = 1
    max_steps: int | None = None              # stop after this many optimizer steps (schedule uses it)
    lr: float = 1e-5
    weight_decay: float = 0.01
    warmup_steps: int = 5
    lr_scheduler: Literal["linear", "constant", "cosine"] = "linear"
    per_device_batch_size: int = 2
    gradient_accumulation_steps: int = 8
    max_grad_norm: float | None = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_seq_length: int = 2048
    group_by_length: bool = True              # length-grouped batches (less padding)
    save_steps: int = 25                      # checkpoint (adapter) + resume state every N steps; 0 = never
    save_merged: bool = False                 # also write merged/ (base + adapter folded)
    precision: Literal["auto", "fp32", "bf16"] = "auto"   # auto: bf16 autocast on GPU, fp32 on CPU
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        check_number("seed", self.seed, low=0, integer=True)
        check_number("epochs", self.epochs, low=1, integer=True)
        check_number("max_steps", self.max_steps, low=1, integer=True, optional=True)
        check_number("lr", self.lr, low=0, low_open=True)
        check_number("weight_decay", self.weight_decay, low=0)
        check_number("warmup_steps", self.warmup_steps, low=0, integer=True)
        check_number("per_device_batch_size", self.per_device_batch_size, low=1, integer=True)
        check_number("gradient_accumulation_steps", self.gradient_accumulation_steps, low=1, integer=True)
        check_number("max_grad_norm", self.max_grad_norm, low=0, low_open=True, optional=True)
        check_number("adam_beta1", self.adam_beta1, low=0, high=1, high_open=True)
        check_number("adam_beta2", self.adam_beta2, low=0, high=1, high_open=True)
        check_number("adam_epsilon", self.adam_epsilon, low=0, low_open=True)
        check_number("max_seq_length", self.max_seq_length, low=8, integer=True)
        check_number("save_steps", self.save_steps, low=0, integer=True)
        check_number("logging_steps", self.logging_steps, low=1, integer=True)

    @property
    def effective_batch_size(self) -> int:
        return self.per_device_batch_size * self.gradient_accumulation_steps

    def for_seed(self, seed: int, output_dir: str | Path | None = None) -> "TrainConfig":
        """A copy with another seed (and output folder)."""
        return replace(self, seed=seed, output_dir=str(output_dir) if output_dir else self.output_dir)


def load_train_config(path: str | Path) -> TrainConfig:
    """Read an ``experiments/*.yaml`` train config. A file whose top level has a ``train:``
    mapping (a whole-experiment config) is read from that section."""
    from em_interp.config import from_dict, read_yaml

    data, lines = read_yaml(path)
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        return from_dict(TrainConfig, data["train"], file=path, lines=lines, prefix="train")
    return load_config(path, TrainConfig)
