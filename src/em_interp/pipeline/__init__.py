"""The experiment pipeline: one YAML config -> data, finetunes, evals, directions, steering,
ablation, probes and reports in one resumable run directory (``em-interp run``).

- ``config``: ``ExperimentConfig`` and ``load_experiment`` (the YAML schema).
- ``runner``: ``run(config, ...)`` / ``run_stages``: ordered stages, ``.done.json`` markers,
  skip-if-valid, ``from_stage``, resume; ``manifest``: ``manifest.json``.
- ``stages``: the real stages, each a thin call into the stage packages' public APIs.
"""

from em_interp.pipeline.config import STAGES, ExperimentConfig, experiment_from_dict, load_experiment
from em_interp.pipeline.runner import RunContext, RunResult, Stage, run, run_stages

__all__ = ["STAGES", "ExperimentConfig", "RunContext", "RunResult", "Stage", "experiment_from_dict",
           "load_experiment", "run", "run_stages"]
