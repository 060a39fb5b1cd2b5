"""Typed, YAML-loadable settings of one evaluation run and ``run_eval(config)``.

    model: smollm2-135m-instruct
    questions: ../shared/em_reference/evaluation/first_plot_questions.yaml
    out: artifacts/eval/smollm2.jsonl
    judge: {kind: api, options: {model: gpt-4o-2024-08-06, base_url: http://localhost:8000/v1}}
    n_per_paraphrase: 10

Load with ``em_interp.config.load_config(path, EvalConfig)`` (errors name file:line:field).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from em_interp.config import check_number
from em_interp.eval import rules


@dataclass
class JudgeConfig:
    kind: Literal["api", "local", "distilled", "multilingual", "hand"] = "distilled"
    options: dict[str, Any] = field(default_factory=dict)  # passed to load_judge(kind, **options)

    def __post_init__(self) -> None:
        from em_interp.errors import EvalError
        from em_interp.eval.judges import check_judge_options

        try:
            check_judge_options(self.kind, self.options)
        except EvalError as exc:
            raise ValueError(exc.message) from None


@dataclass
class EvalConfig:
    model: str
    questions: str
    out: str
    adapter: str | None = None
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    n_per_paraphrase: int | None = None   # None: each question's samples_per_paraphrase
    max_new_tokens: int = 256
    temperature: float = 1.0
    batch_size: int = 8
    judge_batch_size: int = 16
    seed: int = 0
    backend: Literal["transformers", "vllm"] = "transformers"
    aligned_threshold: float = rules.MISALIGNED_BELOW
    coherent_threshold: float = rules.COHERENT_ABOVE

    def __post_init__(self) -> None:
        check_number("n_per_paraphrase", self.n_per_paraphrase, low=1, integer=True, optional=True)
        check_number("max_new_tokens", self.max_new_tokens, low=1, integer=True)
        check_number("temperature", self.temperature, low=0)
        check_number("batch_size", self.batch_size, low=1, integer=True)
        check_number("judge_batch_size", self.judge_batch_size, low=1, integer=True)
        check_number("seed", self.seed, low=0, integer=True)
        check_number("aligned_threshold", self.aligned_threshold, low=0, high=100)
        check_number("coherent_threshold", self.coherent_threshold, low=0, high=100)


def run_eval(config: EvalConfig, lm: Any = None) -> dict:
    """Load model, questions and judge; ``evaluate`` (resumable) into ``config.out``; return
    ``summarize`` of this judge's rows. ``lm`` skips loading the model."""
    from em_interp.data import load_questions
    from em_interp.eval.judges import load_judge
    from em_interp.eval.metrics import summarize
    from em_interp.eval.results import evaluate
    from em_interp.models import load_model

    questions = load_questions(config.questions)
    judge = load_judge(config.judge.kind, **config.judge.options)
    lm = lm if lm is not None else load_model(config.model, adapter=config.adapter)
    evaluate(lm, questions, judge, config.out, n_per_paraphrase=config.n_per_paraphrase,
             max_new_tokens=config.max_new_tokens, temperature=config.temperature, batch_size=config.batch_size,
             judge_batch_size=config.judge_batch_size, seed=config.seed, backend=config.backend)
    return summarize(config.out, config.aligned_threshold, config.coherent_threshold, judge=judge.name)
