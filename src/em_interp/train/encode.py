"""Assistant-only-loss encoding for training. The encoder itself is the one chat encoder,
``em_interp.data.chat_encode`` (shared with interp's inputs); this module re-exports the
names training code imports."""

from em_interp.data.chat_encode import IGNORE_INDEX, Encoded, assistant_spans, encode_chat, encode_dataset

__all__ = ["IGNORE_INDEX", "Encoded", "assistant_spans", "encode_chat", "encode_dataset"]
