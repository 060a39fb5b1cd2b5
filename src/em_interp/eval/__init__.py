"""em_interp.eval: batched sampling (``sampling``), three judges (``judges``: api, local,
distilled), append-only resumable results (``results``), EM metrics with bootstrap CIs
(``metrics``) and the static vulnerable-code scan (``code_scan``)."""

from __future__ import annotations

from em_interp.eval.code_scan import CodeScan, extract_code, scan_code
from em_interp.eval.config import EvalConfig, JudgeConfig, run_eval
from em_interp.eval.judges import KINDS as JUDGE_KINDS
from em_interp.eval.judges import Judge, Judgement, load_judge
from em_interp.eval.metrics import bootstrap_ci, summarize
from em_interp.eval.results import ResultsFile, evaluate, load_results
from em_interp.eval.sampling import plan, row_key, sample_answers

__all__ = [
    "CodeScan", "EvalConfig", "JUDGE_KINDS", "JudgeConfig", "Judge", "Judgement", "ResultsFile", "bootstrap_ci", "evaluate", "extract_code",
    "load_judge", "load_results", "plan", "row_key", "run_eval", "sample_answers", "scan_code", "summarize",
]
