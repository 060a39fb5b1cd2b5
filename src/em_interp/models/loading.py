"""``load_model``: one function for registry names, Hugging Face ids and local folders.

Returns a ``LoadedModel`` holding a plain HF (or peft-wrapped) module and its tokenizer
with a chat template. fp32 on CPU, bf16 on GPU; ``trust_remote_code`` off by default.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors import SafetensorError

from em_interp.errors import ModelError
from em_interp.models.adapters import attach_adapter, check_adapter_folder
from em_interp.models.integrity import Verify, read_marker, verify_converted
from em_interp.models.registry import is_registered
from em_interp.tensorfiles import check_safetensors

# A ChatML template for tokenizers that ship none (used for base models and tiny test models).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass
class LoadedModel:
    """A model ready to use: ``.model`` (HF/peft module, eval mode) and ``.tokenizer``."""

    model: Any
    tokenizer: Any
    name: str                       # what the user asked for (registry name, hub id, path)
    path: str | None = None         # folder the weights came from
    adapter: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def device(self):
        return next(self.model.parameters()).device

    @property
    def n_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def config(self):
        return self.model.config

    def chat_ids(self, messages: list[dict] | str, add_generation_prompt: bool = True):
        """Token ids (1 x T tensor) of a conversation rendered with the chat template."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        enc = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, return_tensors="pt", return_dict=True
        )
        return enc["input_ids"].to(self.device)

    def chat(self, messages: list[dict] | str, max_new_tokens: int = 64, temperature: float = 0.0,
             seed: int | None = 0) -> str:
        """One reply (greedy when ``temperature == 0``), through the one decode loop
        (``models.generate``); ``seed=None`` draws the seed from torch's global RNG. For batches
        use ``em_interp.eval``."""
        import torch

        from em_interp.models.generate import chat_completions

        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        row_seed = seed if seed is not None else int(torch.randint(2**31 - 1, ()))
        [(text, _)] = chat_completions(self.model, self.tokenizer, [messages], max_new_tokens=max_new_tokens,
                                       temperature=temperature, seeds=[row_seed], batch_size=1)
        return text


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str):
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


def _resolve_dtype(dtype: Any, device: str):
    import torch

    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, str):
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                    "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise ModelError(f"unknown dtype '{dtype}'; use float32, bfloat16 or float16") from None
    return dtype


def load_tokenizer(path: str | Path, *, converted: bool = False, trust_remote_code: bool = False):
    """Tokenizer with a chat template and a pad token.

    Converted cache folders are read with ``PreTrainedTokenizerFast`` straight from
    tokenizer.json: in transformers 5, ``AutoTokenizer`` on a qwen2 folder rebuilds the
    pre-tokenizer and gives different ids (see notes/stack.md).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    path = str(path)
    if converted or (Path(path).is_dir() and (Path(path) / "tokenizer.json").exists()):
        tok = PreTrainedTokenizerFast.from_pretrained(path)
    else:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.chat_template is None:
        tok.chat_template = CHATML_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def adapter_hash(adapter: str | Path) -> str:
    """Short sha256 of an adapter's weight files (recorded in artifacts' metadata)."""
    h = hashlib.sha256()
    folder = Path(adapter)
    for f in sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin")):
        with open(f, "rb") as fh:
            while block := fh.read(1 << 22):
                h.update(block)
    return h.hexdigest()[:16]


def load_model(
    name_or_path: str | Path,
    adapter: str | Path | None = None,
    *,
    device: str | None = None,
    dtype: Any = None,
    merge_adapter: bool = False,
    trust_remote_code: bool = False,
    pull: bool = True,
    verify: Verify = "quick",
    allow_base_mismatch: bool = False,
) -> LoadedModel:
    """Load a registry model, a shipped organism ``BASE+ADAPTER`` (``models.shipped``: the base
    with its shipped adapter, whose sha256 is checked against its card first), a Hugging Face hub
    id, a local folder, or an adapter folder alone (its base is the registry model recorded in
    ``em_interp_adapter.json``, else the ``base_model_name_or_path`` of its ``adapter_config.json``).
    An organism with ``adapter`` too has its own adapter merged into the base, ``adapter`` on top.

    Registry names are provisioned offline on first use (``pull=True``) and their converted
    folder is checked against the hashes recorded at conversion (``verify``: ``quick``
    (default: sizes, headers, full hash of files touched since), ``full`` or ``off``; see
    ``models.integrity``). Hub ids and local folders go through the ordinary
    ``from_pretrained`` path (safetensors headers checked first). ``adapter`` is a peft
    adapter folder, checked before peft reads it and refused on another base than the one
    it records unless ``allow_base_mismatch``; ``merge_adapter`` folds it into the weights.
    """
    import torch
    from transformers import AutoModelForCausalLM

    from em_interp.models.shipped import resolve_model, verify_if_shipped

    t0 = time.time()
    requested = str(name_or_path)
    name, organism = resolve_model(requested)   # BASE+ADAPTER: a shipped organism (sha256-checked below)
    if organism is None and adapter is None and Path(name).expanduser().is_dir():
        from em_interp.models.adapters import adapter_base

        base = adapter_base(Path(name).expanduser())   # an adapter folder: load its recorded base with it
        if base is not None:
            adapter, name = Path(name).expanduser(), base
            requested = name
            name, organism = resolve_model(name)   # trained on top of a shipped organism: folded in below
    stacked = None                               # an organism's adapter, folded in below an extra adapter
    if organism is not None:
        organism.verify()                        # before the (slow) base load
        if adapter is None:
            adapter = organism.folder
        else:
            stacked = organism.folder
            check_adapter_folder(stacked)
    device = device or default_device()
    torch_dtype = _resolve_dtype(dtype, device)
    info: dict[str, Any] = {}
    if is_registered(name):
        from em_interp.models import provision

        if not provision.is_converted(name):
            if not pull:
                raise ModelError(f"model '{name}' is not pulled; run `em-interp models pull {name}`")
            provision.pull(name, quiet=False)
        path = provision.converted_dir(name)
        info = read_marker(path / provision.MARKER)
        verify_converted(path, provision.MARKER, info, mode=verify)
        converted = True
    else:
        path = Path(name).expanduser()
        converted = False
        if not path.exists():
            if name.startswith((".", "/", "~")) or name.count("/") > 1:
                raise ModelError(f"model folder not found: {name}")
            path = name  # a hub id: the ordinary way
        elif path.is_dir():
            for f in sorted(path.glob("*.safetensors")):
                check_safetensors(f, ModelError)
    if adapter is not None:
        check_adapter_folder(adapter)  # before the (slow) base load
        if organism is None or stacked is not None:
            verify_if_shipped(adapter)  # a shipped organism's folder given as a path: its card's sha256
    try:
        tokenizer = load_tokenizer(path, converted=converted, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            str(path), dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
    except (OSError, ValueError, KeyError, RuntimeError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"could not load '{name}': {first[:300]}") from None
    model.to(device)
    if stacked is not None:  # an organism with another adapter on top: fold the organism's in first
        model = attach_adapter(model, stacked, merge=True, allow_base_mismatch=allow_base_mismatch, model_name=name)
    if adapter is not None:
        model = attach_adapter(model, adapter, merge=merge_adapter, allow_base_mismatch=allow_base_mismatch,
                               model_name=name)
        info["adapter_hash"] = adapter_hash(adapter)
    if organism is not None:
        info["organism"] = {"name": organism.name, "base": organism.base, "sha256": organism.sha256,
                            "folder": str(organism.folder), "merged": stacked is not None or merge_adapter}
    model.eval()
    info["load_s"] = round(time.time() - t0, 3)
    return LoadedModel(model=model, tokenizer=tokenizer, name=requested, path=str(path),
                       adapter=str(adapter) if adapter else None, info=info)
