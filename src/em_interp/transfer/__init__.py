"""Cross-language and cross-format transfer of emergent misalignment (the interlacing hypothesis).

- ``matrix``: source x target matrices of misaligned share / vulnerable-code rate with CIs.
- ``stats``: Spearman rho with a seeded permutation p-value; bootstrap CIs of shares.
- ``proximity``: genealogical (encoded tree) and representation (parallel sentences) proximity.
- ``config`` / ``experiment``: ``TransferConfig`` and ``run_transfer(config, out_dir)``.
- figures (transfer heatmap, proximity scatter, direction cosines, ablation): ``em_interp.report.figures``.
"""

from em_interp.transfer.config import (CODE_TARGET, DirectionSpec, EvalSpec, JudgeSpec, ProximitySpec, SourceSpec,
                                       TransferConfig, load_transfer_config, transfer_config_from_dict)
from em_interp.transfer.experiment import run_transfer
from em_interp.transfer.matrix import (TransferMatrix, delta_matrix, is_misaligned, misalignment_matrix,
                                       transfer_pairs, vulnerable_code_matrix)
from em_interp.transfer.proximity import (GENEALOGY, GENEALOGY_SOURCE, RepresentationProximity,
                                          genealogical_matrix, genealogical_proximity, load_parallel_sentences,
                                          representation_similarity, similarity_from_activations)
from em_interp.transfer.stats import CorrelationResult, bootstrap_share_ci, spearman_permutation

__all__ = [
    "CODE_TARGET", "CorrelationResult", "DirectionSpec", "EvalSpec", "GENEALOGY", "GENEALOGY_SOURCE", "JudgeSpec",
    "ProximitySpec", "RepresentationProximity", "SourceSpec", "TransferConfig", "TransferMatrix",
    "bootstrap_share_ci", "delta_matrix", "genealogical_matrix", "genealogical_proximity", "is_misaligned",
    "load_parallel_sentences", "load_transfer_config", "misalignment_matrix", "representation_similarity",
    "run_transfer", "similarity_from_activations", "spearman_permutation", "transfer_config_from_dict", "transfer_pairs",
    "vulnerable_code_matrix",
]
