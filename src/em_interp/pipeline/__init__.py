"""The experiment pipeline: one YAML config -> data, finetunes, evals, directions, steering,
ablation, probes and reports in one resumable run directory (``em-interp run``); the
transfer experiment runs on the same runner (``em-interp transfer``).

- ``config``: ``ExperimentConfig`` and ``load_experiment`` (the YAML schema); ``checks``:
  everything a run would reject (model, layers, judge kind and languages).
- ``runner``: ``run(config, ...)`` / ``run_config`` / ``run_stages``: ordered stages,
  ``.done.json`` markers, skip-if-valid, ``from_stage``, resume; ``manifest``: ``manifest.json``.
- ``stages``: the experiment's stages; ``transfer_stages``: the transfer experiment's
  (``run_transfer``); ``common``: what both share (base model, finetune, judge, JSONL rows).
"""

from em_interp.pipeline.config import STAGES, ExperimentConfig, experiment_from_dict, load_experiment
from em_interp.pipeline.runner import RunContext, RunResult, Stage, run, run_config, run_stages

__all__ = ["STAGES", "ExperimentConfig", "RunContext", "RunResult", "Stage", "experiment_from_dict",
           "load_experiment", "run", "run_config", "run_stages"]
