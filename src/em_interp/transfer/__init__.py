"""Cross-language and cross-format transfer of emergent misalignment (the interlacing hypothesis):
the science; the experiment runs as stages of the pipeline runner (``em-interp transfer``,
``em_interp.pipeline.transfer_stages``).

- ``config``: ``TransferConfig`` / ``load_transfer_config`` (the YAML schema).
- ``matrix``: source x target matrices of EM share / vulnerable-code rate with clustered CIs.
- ``stats``: Spearman rho with a seeded permutation p-value; ``source_tests``: one test per source.
- ``proximity``: genealogical (encoded tree) and representation (parallel sentences) proximity.
- ``directions``: per-language directions of one finetune and their cosines.
- figures (transfer heatmap, proximity scatter, direction cosines, ablation): ``em_interp.report.figures``.
"""

from em_interp.transfer.config import (CODE_TARGET, DirectionSpec, EvalSpec, JudgeSpec, ProximitySpec, SourceSpec,
                                       TransferConfig, load_transfer_config, transfer_config_from_dict)
from em_interp.transfer.matrix import (TransferMatrix, delta_matrix, diff_interval, is_misaligned,
                                       misalignment_matrix, share_interval, transfer_pairs, vulnerable_code_matrix)
from em_interp.transfer.proximity import (GENEALOGY, GENEALOGY_SOURCE, RepresentationProximity,
                                          genealogical_matrix, genealogical_proximity, load_parallel_sentences,
                                          representation_similarity, similarity_from_activations)
from em_interp.transfer.stats import CorrelationResult, SourceTest, source_tests, spearman_permutation

__all__ = [
    "CODE_TARGET", "CorrelationResult", "DirectionSpec", "EvalSpec", "GENEALOGY", "GENEALOGY_SOURCE", "JudgeSpec",
    "ProximitySpec", "RepresentationProximity", "SourceSpec", "SourceTest", "TransferConfig", "TransferMatrix",
    "delta_matrix", "diff_interval", "genealogical_matrix", "genealogical_proximity", "is_misaligned",
    "load_parallel_sentences", "load_transfer_config", "misalignment_matrix", "representation_similarity",
    "share_interval", "similarity_from_activations", "source_tests", "spearman_permutation",
    "transfer_config_from_dict", "transfer_pairs", "vulnerable_code_matrix",
]
