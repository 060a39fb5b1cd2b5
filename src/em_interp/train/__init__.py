"""em_interp.train: supervised finetuning (LoRA, rank-1 LoRA, full) on chat JSONL with
assistant-only loss, checkpoints, exact resume and seed sweeps.

    from em_interp.train import TrainConfig, train
    result = train(TrainConfig(model="smollm2-135m-instruct", data="insecure.jsonl", output_dir="runs/a"))
    result.adapter_dir, result.checkpoints, result.metadata["loss_curve"]
"""

from em_interp.train.config import ALL_PROJECTIONS, LoraSettings, TrainConfig, load_train_config
from em_interp.train.encode import IGNORE_INDEX, Encoded, assistant_spans, encode_chat, encode_dataset
from em_interp.train.loop import META_FILE, TrainResult, train, train_seeds
from em_interp.train.trainable import valid_target_names

__all__ = [
    "ALL_PROJECTIONS", "IGNORE_INDEX", "META_FILE", "Encoded", "LoraSettings", "TrainConfig", "TrainResult",
    "assistant_spans", "encode_chat", "encode_dataset", "load_train_config", "train", "train_seeds",
    "valid_target_names",
]
