"""``TransferConfig``: the typed YAML schema of one transfer experiment (``em-interp transfer``).

A transfer experiment finetunes the base model once per *source* (a dataset in one
language or format), evaluates the base model and every finetune on every *target*
(natural languages through the multilingual question bank, ``python`` through the coding
prompts), and derives transfer matrices, per-language directions and proximity
correlations. Loaded with ``load_transfer_config(path)``: unknown keys, wrong types and
bad cross-field values fail with ``file:line: field 'a.b': message``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from em_interp.config import config_hash, from_dict, nearest_line, read_yaml
from em_interp.errors import ConfigError
from em_interp.models.registry import DEFAULT_MODEL

CODE_TARGET = "python"


@dataclass
class SourceSpec:
    """One finetuning source: ``build_dataset(kind, n, seed, out, language=..., **options)``.

    ``language`` is passed to prose kinds (bad-advice, offensive, ...); code kinds
    (insecure, secure, educational, ...) are the ``python`` format and take none.
    Or, with ``adapter``, an already trained model used as the source (no data, no training): a
    shipped organism's name (``em-interp models list``; ``ADAPTER`` alone means one on the
    experiment's model) or a peft adapter folder (relative to the config file or absolute);
    ``language`` is then the language it was trained in (required).
    """

    kind: str = ""                              # a build_dataset kind (not with adapter)
    n: int = 200
    language: str | None = None
    name: str | None = None                     # label in matrices; default "kind/language" or "kind"
    options: dict[str, Any] = field(default_factory=dict)
    control: bool = False                       # a control source (secure, educational, aligned-advice): tested apart
    adapter: str | None = None                  # a trained adapter instead of kind: organism name or folder

    def __post_init__(self) -> None:
        if bool(self.kind) == bool(self.adapter):
            raise ValueError(f"source {self.name or self.kind or self.adapter!r}: give either kind (a dataset to train "
                             "on) or adapter (an organism or adapter folder to use as it is), not both or neither")
        if self.n < 1:
            raise ValueError(f"source {self.kind!r}: n must be >= 1, got {self.n}")
        if self.name is not None and (not self.name or any(c in self.name for c in "\\ :")):
            raise ValueError(f"source name {self.name!r} must be non-empty without '\\\\', ' ', ':'")

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        stem = self.kind or Path(str(self.adapter).rstrip("/")).name
        return f"{stem}/{self.language}" if self.language else stem

    @property
    def slug(self) -> str:
        """Folder-safe label."""
        return self.label.replace("/", "__")

    @property
    def role(self) -> str:
        """``"control"`` or ``"treatment"``."""
        return "control" if self.control else "treatment"


@dataclass
class EvalSpec:
    """How each (model, target) cell is evaluated."""

    questions_per_language: int | None = None   # first N bank questions per language (None: all)
    forms: list[str] = field(default_factory=lambda: ["plain"])
    samples: int = 4                            # answers per question paraphrase
    coding_prompts: int | None = None           # first N coding prompts (None: all)
    code_samples: int = 2                       # answers per coding prompt
    max_new_tokens: int = 200
    code_max_new_tokens: int = 300
    temperature: float = 1.0
    batch_size: int = 8

    def __post_init__(self) -> None:
        if self.samples < 1 or self.code_samples < 1:
            raise ValueError("samples and code_samples must be >= 1")
        for name in ("questions_per_language", "coding_prompts"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"{name} must be >= 1 (or null for all), got {v}")


@dataclass
class JudgeSpec:
    kind: str = "distilled"                     # a kind of em_interp.eval.load_judge valid for every target language
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DirectionSpec:
    """Per-language misalignment directions in one finetuned model, and cross-language ablation.

    ``model_diff``: finetuned minus base activations on the finetune's own answers in that
    language (always defined). ``mean_diff``: misaligned minus aligned answers of the
    finetune in that language (needs ``min_per_class`` of each; languages with fewer are
    reported as skipped). The ``python`` direction uses the coding-prompt answers
    (``mean_diff``: vulnerable minus clean code).
    """

    enabled: bool = True
    source: str | None = None                   # source label of the finetune (default: first source)
    method: Literal["model_diff", "mean_diff"] = "model_diff"
    match: Literal["none", "question"] = "none"  # mean_diff: question-matched (each question's topic cancels)
    layers: list[int] | None = None             # layers to extract (None: all)
    layer: int | None = None                    # layer of the cosine heatmap (None: middle of `layers`)
    min_per_class: int = 3
    ablation: bool = True                       # misaligned share in B with A's direction ablated
    ablation_layers: list[int] | None = None    # None: every layer (plus the embeddings)
    ablation_targets: list[str] | None = None   # languages evaluated under ablation (None: all languages)
    ablation_directions: list[str] | None = None  # languages whose direction is ablated (None: each one's)


@dataclass
class ProximitySpec:
    representation: bool = True                 # model's own similarity of parallel sentences
    layers: list[int] | None = None             # None: all layers (mean over them is used)
    center: bool = False                        # raw cosines (True: centre over the compared languages)
    skip_first: bool = True                     # drop the attention-sink first token from each mean
    transfer: Literal["delta", "share"] = "delta"   # delta: finetune minus base share per target
    include_self: bool = False                  # include source-language == target pairs
    alternative: Literal["two-sided", "greater", "less"] = "greater"
    n_permutations: int = 10_000


@dataclass
class TransferConfig:
    """A whole transfer experiment; see ``experiments/transfer_*.yaml``."""

    GLOBAL_FIELDS: ClassVar[tuple[str, ...]] = ("model", "seed")   # in every stage's fingerprint

    name: str
    sources: list[SourceSpec]
    model: str = DEFAULT_MODEL
    device: str | None = None                   # None = cuda if available else cpu
    targets: list[str] = field(default_factory=lambda: ["en", "fr", "de", "es", "zh", "ru", CODE_TARGET])
    include_base: bool = True                   # evaluate the untouched model as the "base" row
    data_seed: int = 0
    seed: int = 0                               # training and sampling seed
    train: dict[str, Any] = field(default_factory=dict)   # TrainConfig fields (validated against it)
    eval: EvalSpec = field(default_factory=EvalSpec)
    judge: JudgeSpec = field(default_factory=JudgeSpec)
    directions: DirectionSpec = field(default_factory=DirectionSpec)
    proximity: ProximitySpec = field(default_factory=ProximitySpec)
    aligned_threshold: float = 30.0
    coherent_threshold: float = 50.0
    n_boot: int = 2000

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"name {self.name!r} must be non-empty without '/', '\\\\' or spaces")

    @property
    def languages(self) -> list[str]:
        return [t for t in self.targets if t != CODE_TARGET]

    def hash(self) -> str:
        """The config hash (manifest, run-directory choice)."""
        return config_hash(self)

    def source(self, label: str) -> SourceSpec:
        for s in self.sources:
            if s.label == label:
                return s
        raise ConfigError(f"no source labelled {label!r}; sources: {[s.label for s in self.sources]}")


def source_language(spec: SourceSpec) -> str:
    """The language a source is written in: its ``language`` or ``python`` for code kinds."""
    return spec.language or CODE_TARGET


def _check(cfg: TransferConfig, file: str | Path | None, lines: dict[str, int]) -> None:
    from em_interp.data import KINDS
    from em_interp.data.bank import LANGUAGES
    from em_interp.train import TrainConfig

    def fail(fieldpath: str, message: str):
        raise ConfigError(message, file=file, line=nearest_line(lines, fieldpath), field=fieldpath)

    if not cfg.sources:
        fail("sources", "at least one source is required")
    labels = [s.label for s in cfg.sources]
    for i, s in enumerate(cfg.sources):
        where = f"sources[{i}]"
        if labels.count(s.label) > 1 or s.label == "base":
            fail(f"{where}", f"source label {s.label!r} is duplicated or reserved; set a distinct `name:`")
        if s.adapter:                             # resolved against the model in pipeline.checks.check_transfer
            if s.language is None:
                fail(f"{where}.language", "an adapter source needs the language it was trained in "
                     f"({', '.join(LANGUAGES)}, or {CODE_TARGET} for code)")
            if s.language not in (*LANGUAGES, CODE_TARGET):
                fail(f"{where}.language", f"unknown language {s.language!r}; valid: {', '.join(LANGUAGES)}, {CODE_TARGET}")
            if s.options:
                fail(f"{where}.options", "an adapter source is not built or trained: it takes no options")
            continue
        if s.kind not in KINDS:
            fail(f"{where}.kind", f"unknown dataset kind {s.kind!r}; valid: {', '.join(KINDS)}")
        takes_language = "language" in KINDS[s.kind].options
        if takes_language and s.language is None:
            fail(f"{where}.language", f"kind {s.kind!r} needs a language ({', '.join(LANGUAGES)})")
        if not takes_language and s.language is not None:
            fail(f"{where}.language", f"kind {s.kind!r} is code (the python format): it takes no language")
        if s.language is not None and s.language not in LANGUAGES:
            fail(f"{where}.language", f"unknown language {s.language!r}; valid: {', '.join(LANGUAGES)}")
        if "language" in s.options:
            fail(f"{where}.options.language", "set the source's language with `language:`, not in options")
    if not cfg.targets:
        fail("targets", "at least one target is required")
    for i, t in enumerate(cfg.targets):
        if t != CODE_TARGET and t not in LANGUAGES:
            fail(f"targets[{i}]", f"unknown target {t!r}; valid: {', '.join(LANGUAGES)}, {CODE_TARGET}")
    if len(set(cfg.targets)) != len(cfg.targets):
        fail("targets", "targets are duplicated")
    reserved = {"model", "data", "output_dir", "seed"} & set(cfg.train)
    if reserved:
        fail(f"train.{sorted(reserved)[0]}", "set per source by the experiment; remove it from train")
    from_dict(TrainConfig, dict(cfg.train), file=file, lines=lines, prefix="train")
    d = cfg.directions
    if d.enabled:
        if d.source is not None and d.source not in labels:
            fail("directions.source", f"no source labelled {d.source!r}; sources: {labels}")
        for name in ("ablation_targets", "ablation_directions"):
            for i, t in enumerate(getattr(d, name) or []):
                if t not in cfg.languages:
                    fail(f"directions.{name}[{i}]", f"{t!r} is not a language target of {cfg.languages}")
    if cfg.proximity.n_permutations < 10:
        fail("proximity.n_permutations", "use at least 10 permutations")


def transfer_config_from_dict(data: dict[str, Any], *, file: str | Path | None = None,
                              lines: dict[str, int] | None = None) -> TransferConfig:
    cfg = from_dict(TransferConfig, data, file=file, lines=lines or {})
    _check(cfg, file, lines or {})
    return cfg


def is_transfer_config(path: str | Path) -> bool:
    """True when the YAML file at ``path`` is a transfer experiment (a mapping with ``sources``);
    an unreadable file is not (the experiment loader then says why)."""
    from em_interp.errors import EmInterpError

    try:
        data, _ = read_yaml(path)
    except (EmInterpError, OSError):
        return False
    return isinstance(data, dict) and "sources" in data


def load_transfer_config(path: str | Path) -> TransferConfig:
    """Read ``experiments/transfer_*.yaml`` into a validated ``TransferConfig``."""
    data, lines = read_yaml(path)
    return transfer_config_from_dict(data, file=path, lines=lines)
