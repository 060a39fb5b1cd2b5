"""Interpretability core: one hook API (``hooks``) on canonical sites over HF / peft, nnsight and
TransformerLens models; streaming capture; directions; steering, ablation and activation
patching built on the hooks; probes, LoRA-adapter analysis, projection monitoring, model
diffs and the logit lens; interop with steering-vectors and repeng.

Every function that takes a model accepts a ``LoadedModel``, ``(model, tokenizer)``, an
nnsight ``LanguageModel`` or a TransformerLens ``HookedTransformer`` / ``TransformerBridge``
(``as_model``); see ``docs/interfaces.md`` (interp section) for the contract.
"""

from em_interp.interp.backends import BACKENDS, Backend, make_backend
from em_interp.interp.handles import ModelHandle, as_model
from em_interp.interp.hooks import HookState, hooks
from em_interp.interp.patching import RunCache, forward_logits, patch, run_with_cache
from em_interp.interp.capture import REDUCTIONS, Capture, capture
from em_interp.interp.direction import Direction, cosine_table
from em_interp.interp.extract import (DEFAULT_PERSONA_QUESTIONS, PERSONA_PROMPTS, generate_answers, matched_groups,
                                      matched_mean_diff, mean_diff, mean_diff_direction, model_diff_direction,
                                      pca_direction, pca_vector, persona_direction, probe_direction, probe_vector,
                                      within_group_auroc)
from em_interp.interp.data_io import load_examples, load_judged, split_judged
from em_interp.interp.inputs import TOKENS, bos_id, data_hash, encode_example, iter_batches
from em_interp.interp.lora_analysis import (LoraModule, adapter_deltas, b_vector_cosines, checkpoint_trajectory,
                                            lora_delta_norms)
from em_interp.interp.model_diff import DiffResult, compute_diff, direction_vectors
from em_interp.interp.convergence import compare_finetunes, finetune_diffs
from em_interp.interp.paired import PairedBatch, logit_lens, paired_batches
from em_interp.interp.monitor import projection_monitor, projection_shift
from em_interp.interp.probes import Probe, ProbeSet, load_probes, save_probes, train_probes
from em_interp.interp.sites import SITE_KINDS, Site, decoder_layers, parse_site, parse_sites, unwrap
from em_interp.interp.steering import (ABLATION_MODES, ALPHA_CONVENTION, ALPHA_DEFINITION, ablate, mean_projections,
                                       random_direction_like, steer, steering_sweep)

__all__ = [
    "BACKENDS", "Backend", "Capture", "DEFAULT_PERSONA_QUESTIONS", "Direction", "PERSONA_PROMPTS", "REDUCTIONS",
    "SITE_KINDS", "Site", "ablate", "capture", "cosine_table", "data_hash", "decoder_layers", "encode_example",
    "generate_answers", "iter_batches", "make_backend", "matched_groups", "matched_mean_diff", "mean_diff",
    "mean_diff_direction", "within_group_auroc",
    "model_diff_direction", "parse_site", "parse_sites", "pca_direction", "pca_vector", "persona_direction",
    "probe_direction", "probe_vector", "random_direction_like", "steer", "steering_sweep", "unwrap",
    "load_examples", "load_judged", "split_judged", "LoraModule", "adapter_deltas", "b_vector_cosines",
    "checkpoint_trajectory", "projection_monitor", "projection_shift", "Probe", "ProbeSet", "load_probes",
    "save_probes", "train_probes",
    "ABLATION_MODES", "ALPHA_CONVENTION", "ALPHA_DEFINITION", "HookState", "ModelHandle", "RunCache", "TOKENS",
    "as_model", "bos_id", "forward_logits", "hooks", "mean_projections", "patch", "run_with_cache",
    "DiffResult", "PairedBatch", "compare_finetunes", "compute_diff", "finetune_diffs", "direction_vectors", "logit_lens", "lora_delta_norms", "paired_batches",
]
