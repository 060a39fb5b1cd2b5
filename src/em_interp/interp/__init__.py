"""Interpretability core: hook sites over three backends, streaming capture, directions,
steering, directional ablation, probes, LoRA-adapter analysis and projection monitoring.

Everything works on the plain HF / peft module inside a ``LoadedModel``; see
``docs/interfaces.md`` (interp section) for the contract.
"""

from em_interp.interp.backends import BACKENDS, Backend, make_backend
from em_interp.interp.capture import REDUCTIONS, Capture, capture
from em_interp.interp.direction import Direction, cosine_table
from em_interp.interp.extract import (DEFAULT_PERSONA_QUESTIONS, PERSONA_PROMPTS, generate_answers, mean_diff,
                                      mean_diff_direction, model_diff_direction, pca_direction, pca_vector,
                                      persona_direction, probe_direction, probe_vector)
from em_interp.interp.data_io import load_examples, load_judged, split_judged
from em_interp.interp.inputs import data_hash, encode_example, iter_batches
from em_interp.interp.lora_analysis import LoraModule, adapter_deltas, b_vector_cosines, checkpoint_trajectory
from em_interp.interp.monitor import projection_monitor, projection_shift
from em_interp.interp.probes import Probe, ProbeSet, load_probes, plot_probe_accuracy, save_probes, train_probes
from em_interp.interp.sites import SITE_KINDS, Site, decoder_layers, parse_site, parse_sites, unwrap
from em_interp.interp.steering import ablate, random_direction_like, steer, steering_sweep

__all__ = [
    "BACKENDS", "Backend", "Capture", "DEFAULT_PERSONA_QUESTIONS", "Direction", "PERSONA_PROMPTS", "REDUCTIONS",
    "SITE_KINDS", "Site", "ablate", "capture", "cosine_table", "data_hash", "decoder_layers", "encode_example",
    "generate_answers", "iter_batches", "make_backend", "mean_diff", "mean_diff_direction",
    "model_diff_direction", "parse_site", "parse_sites", "pca_direction", "pca_vector", "persona_direction",
    "probe_direction", "probe_vector", "random_direction_like", "steer", "steering_sweep", "unwrap",
    "load_examples", "load_judged", "split_judged", "LoraModule", "adapter_deltas", "b_vector_cosines",
    "checkpoint_trajectory", "projection_monitor", "projection_shift", "Probe", "ProbeSet", "load_probes",
    "plot_probe_accuracy", "save_probes", "train_probes",
]
