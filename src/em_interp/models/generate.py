"""The one decode loop: continuous batching over a slot KV cache, per-row RNG, merged LoRA.

Everything that samples text (``eval.sample_answers``, ``LoadedModel.chat``, interp's
persona answers) comes here. What makes it fast on a CPU compared to ``generate``:

- **Continuous batching**: ``batch_size`` slots; a row that stops (end-of-turn or
  ``max_new_tokens``) frees its slot and the next pending prompt is prefilled into it,
  so the batch stays full instead of waiting for its longest row.
- **Slot KV cache** (``SlotCache``): preallocated per slot, written in place (no
  ``torch.cat`` per step); each step attends over the longest live row only.
- **LoRA merged for sampling** (``merged_lora``): adapter deltas are folded into the
  base weights for the duration and the original tensors put back afterwards (bit-exact);
  forward hooks on decoder layers and modules (steering, ablation, capture) still apply.
- Prefill computes the LM head at the last prompt position only.
- **bf16 linear weights** (``precision="bf16"``, or ``"auto"`` where it pays: an fp32
  model of >= 2^24 linear weights on a CPU with native bf16 dot products, e.g.
  avx512_bf16): ``cast_linears`` runs every ``nn.Linear`` on a bf16 copy of its (merged)
  weight, casting the input just before and the output just after the matmul, so the
  residual stream, norms, attention, KV cache and every hook stay fp32. oneDNN's bf16
  matmul runs ~4x the fp32 rate on such CPUs (see ``benchmarks/bench_sample.py``); the
  logits move by about the format's rounding (tests: ``tests/test_fast_sampling.py``).
  ``decode``/``chat_completions`` default to ``"model"`` (as loaded); ``eval.sample_answers``
  defaults to ``"auto"``.

It runs the model's own HF forward (decoder layers, their hooks), with a custom 4D mask
and explicit position ids, so ``interp.hooks``' prompt/response tracking holds: a
prefill call has no past (prompt), a decode call reports a past at least as long as
any prompt (response).

Determinism: each row draws its tokens from its own generator seeded by ``seeds[i]``
(inverse-CDF: one uniform per row and step against the cumulative ``softmax(logits / T)``), so a
row's answer is a function of (model, prompt, seed) and not of which rows share its
batch or of the order they run in -- up to floating-point rounding, which the batch's
shape can change in the last bits (a near-tie may then flip). With the same prompts,
seeds and ``batch_size`` the output is bit-identical. ``temperature == 0`` is greedy.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch

END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>")


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """Token ids that end an answer: the model's EOS ids and the known end-of-turn tokens."""
    ids: set[int] = set()
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, int):
        ids.add(eos)
    elif eos:
        ids.update(eos)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    for special in END_OF_TURN_TOKENS:
        if special in vocab:
            ids.add(int(vocab[special]))
    return sorted(ids)


@contextlib.contextmanager
def merged_lora(model: Any) -> Iterator[int]:
    """Fold active, unmerged peft LoRA adapters into their base weights; restore them exactly.

    Yields the number of layers merged (0 for a plain model)."""
    stash = []
    try:
        with torch.no_grad():
            for module in model.modules():
                if not (hasattr(module, "get_delta_weight") and hasattr(module, "merged_adapters")
                        and hasattr(module, "base_layer")) or module.merged or module.disable_adapters:
                    continue
                active = [a for a in module.active_adapters if a in module.lora_A]
                if not active:
                    continue
                weight = module.base_layer.weight
                original = weight.data
                merged = original.clone()
                for name in active:
                    merged += module.get_delta_weight(name).to(original.dtype)
                weight.data = merged
                module.merged_adapters.extend(active)
                stash.append((module, weight, original, active))
        yield len(stash)
    finally:
        for module, weight, original, active in stash:
            weight.data = original
            for name in active:
                module.merged_adapters.remove(name)


PRECISIONS = ("auto", "model", "bf16")
AUTO_BF16_MIN_LINEAR_PARAMS = 1 << 24  # below this, per-op overhead (not matmul) bounds a step


def bf16_matmul_native() -> bool:
    """True when this CPU has native bf16 dot products that oneDNN uses (avx512_bf16 / AMX)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _linears(model: Any) -> list[tuple[str, torch.nn.Linear]]:
    """The model's ``nn.Linear`` layers that run when LoRA is merged (not the adapters' A/B)."""
    return [(name, m) for name, m in model.named_modules()
            if type(m) is torch.nn.Linear and ".lora_" not in f".{name}"]


def linear_dtype(model: Any, precision: str = "model") -> torch.dtype | None:
    """The dtype the linear weights take for sampling (None: as loaded).

    ``"model"``: as loaded. ``"bf16"``: bf16 weights (fp32 activations, residual stream and
    KV cache; see ``cast_linears``). ``"auto"``: bf16 for an fp32 model on a CPU with native
    bf16 dot products whose linear layers hold >= 2^24 weights (there a decode step is
    matmul-bound and bf16 runs ~4x the fp32 rate; below, per-op overhead dominates and
    the model's own dtype is kept); else as loaded."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "model":
        return None
    if precision == "bf16":
        return torch.bfloat16
    weight = model.get_input_embeddings().weight
    if weight.device.type != "cpu" or weight.dtype != torch.float32 or not bf16_matmul_native():
        return None
    n = sum(m.weight.numel() for _, m in _linears(model))
    return torch.bfloat16 if n >= AUTO_BF16_MIN_LINEAR_PARAMS else None


PACK_BATCH_HINT = 32  # oneDNN's weight-layout hint; any batch runs on the packed weight, bit-identically


def _pack(weight: torch.Tensor) -> torch.Tensor | None:
    """oneDNN's prepacked (blocked) copy of a CPU bf16 linear weight, or None where unavailable.

    A prepacked weight skips the per-call reorder of a plain one: 20-35% faster at decode
    shapes here, and the same numbers (``benchmarks/bench_sample.py``)."""
    if weight.device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(weight, PACK_BATCH_HINT)
    except (AttributeError, RuntimeError):
        return None


def _cast_forward(module: torch.nn.Linear, low: torch.Tensor, packed: torch.Tensor | None,
                  bias: torch.Tensor | None, dtype: torch.dtype) -> Callable[[torch.Tensor], torch.Tensor]:
    """A Linear forward on the ``dtype`` copy of the weight, in and out in the input's dtype."""
    def forward(input: torch.Tensor) -> torch.Tensor:
        x = input.to(dtype)
        if packed is not None and not (torch.is_grad_enabled() and x.requires_grad):
            y = torch.ops.mkldnn._linear_pointwise(x, packed, None, "none", [], "")
        else:  # autograd, or no oneDNN: the plain matmul on the same low-precision weight
            y = torch.nn.functional.linear(x, low if low is not None else module.weight.to(dtype))
        y = y.to(input.dtype)
        return y if bias is None else y + bias.to(input.dtype)
    return forward


@contextlib.contextmanager
def cast_linears(model: Any, dtype: torch.dtype | None) -> Iterator[int]:
    """Run every ``nn.Linear`` on a ``dtype`` copy of its (current, e.g. LoRA-merged) weight.

    For the duration each linear's ``forward`` (an instance attribute, put back on exit)
    casts its input to ``dtype`` for the matmul and the result back to the input's dtype,
    adding the bias there, so everything between linears (residual stream, norms,
    attention, KV cache) keeps the model's dtype. Module hooks run as before, around that
    forward: a pre-hook on a linear sees its fp32 input, a forward hook its fp32 output.
    On CPU the copy is oneDNN-prepacked (``_pack``). The parameters are never touched.
    Yields the number of layers cast (0 when ``dtype`` is None)."""
    stash: list[tuple[torch.nn.Module, Any]] = []
    try:
        if dtype is not None:
            with torch.no_grad():
                for _, m in _linears(model):
                    weight = m.weight
                    if weight is None or weight.dtype == dtype:
                        continue
                    low = weight.detach().to(dtype)
                    packed = _pack(low)
                    stash.append((m, m.__dict__.get("forward")))
                    m.forward = _cast_forward(m, None if packed is not None else low, packed,
                                              None if m.bias is None else m.bias.detach(), dtype)
        yield len(stash)
    finally:
        for m, previous in stash:
            if previous is None:
                m.__dict__.pop("forward", None)
            else:
                m.forward = previous


class SlotCache:
    """KV cache with one preallocated row per batch slot (duck-types transformers' ``Cache``).

    ``prefill(slots, starts)`` makes the next forward write whole left-padded prompts into
    ``slots``; ``decode()`` makes it append one token to every slot at that slot's length.
    Columns ``[start, length)`` of a slot are live; the rest is masked out."""

    def __init__(self, n_layers: int, n_slots: int, n_kv_heads: int, head_dim: int, capacity: int,
                 dtype: torch.dtype, device: Any) -> None:
        shape = (n_slots, n_kv_heads, capacity, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.starts = torch.zeros(n_slots, dtype=torch.long, device=device)
        self.lengths = torch.zeros(n_slots, dtype=torch.long, device=device)
        self._slots: torch.Tensor | None = None
        self._width = 0

    @property
    def n_slots(self) -> int:
        return self.keys[0].shape[0]

    def prefill(self, slots: torch.Tensor, starts: torch.Tensor, width: int) -> None:
        """Next forward: left-padded prompts of ``width`` tokens into ``slots`` (pads end at ``starts``)."""
        self._slots, self._width = slots, width
        self.starts[slots] = starts
        self.lengths[slots] = width

    def decode(self) -> None:
        """Next forward: one new token for every slot."""
        self._slots, self._width = None, int(self.lengths.max()) + 1

    def keep(self, slots: torch.Tensor) -> None:
        """Drop every slot not in ``slots`` (compaction when the batch drains); copies only the
        columns any kept slot has written, not the whole capacity."""
        width = int(self.lengths[slots].max()) if len(slots) else 0

        def gather(t: torch.Tensor) -> torch.Tensor:
            out = t.new_zeros((len(slots),) + tuple(t.shape[1:]))  # masked columns must stay finite
            out[:, :, :width] = t[slots, :, :width]
            return out

        self.keys = [gather(k) for k in self.keys]
        self.values = [gather(v) for v in self.values]
        self.starts, self.lengths = self.starts[slots], self.lengths[slots]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """0 during a prefill (the call is prompt); else the longest live slot."""
        return 0 if self._slots is not None else int(self.lengths.max())

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, cache_kwargs: Any = None):
        """Write this call's keys/values; return what the call attends over."""
        if self._slots is not None:
            width = key.shape[2]
            self.keys[layer_idx][self._slots, :, :width] = key
            self.values[layer_idx][self._slots, :, :width] = value
            return key, value
        rows = torch.arange(self.n_slots, device=key.device)
        pos = self.lengths
        self.keys[layer_idx][rows, :, pos] = key[:, :, 0]
        self.values[layer_idx][rows, :, pos] = value[:, :, 0]
        return self.keys[layer_idx][:, :, :self._width], self.values[layer_idx][:, :, :self._width]

    def advance(self, live: torch.Tensor) -> None:
        """After a decode forward: every live slot grew by one token (a dead one keeps its column)."""
        self.lengths += live.to(self.lengths.dtype)


def _prefill_inputs(prompts: list[Sequence[int]], pad_id: int, device: Any) -> dict[str, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    starts = torch.tensor([width - len(p) for p in prompts], dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p), dtype=torch.long)
    col = torch.arange(width)
    causal = col[None, :] <= col[:, None]
    live = col[None, None, :] >= starts[:, None, None]
    own = torch.eye(width, dtype=torch.bool)[None]          # a pad query sees itself: no empty softmax row
    mask = (causal[None] & live) | own
    positions = (col[None, :] - starts[:, None]).clamp(min=0)
    return {"input_ids": ids.to(device), "attention_mask": mask[:, None].to(device),
            "position_ids": positions.to(device), "starts": starts.to(device)}


def _kv_shape(model: Any) -> tuple[int, int, int]:
    config = model.config
    n_heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // n_heads
    return config.num_hidden_layers, getattr(config, "num_key_value_heads", None) or n_heads, head_dim


def _pick(logits: torch.Tensor, temperature: float, generators: list[torch.Generator]) -> torch.Tensor:
    """Greedy (``temperature <= 0``) or one token per row by inverse-CDF sampling.

    Row ``i`` draws one uniform ``u`` from ``generators[i]`` and takes the first token whose
    cumulative probability exceeds ``u`` (a zero-probability token is never taken): the
    exact categorical distribution of ``softmax(logits / T)``, one RNG draw per row and
    step instead of a vocabulary's worth of noise."""
    if temperature <= 0:
        return logits.argmax(-1)
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum_(-1)
    u = torch.cat([torch.rand(1, generator=g, dtype=torch.float64, device=g.device) for g in generators])
    target = (u * cdf[:, -1].double()).to(cdf.dtype)[:, None]
    picked = torch.searchsorted(cdf, target, right=True)[:, 0]
    over = picked >= cdf.shape[-1]  # rounding put the target at the total: the last token with mass
    if bool(over.any()):
        picked = torch.where(over, torch.searchsorted(cdf, cdf[:, -1:])[:, 0], picked)
    return picked


@dataclass
class Completion:
    """One finished row: its new token ids (stop token excluded) and why it ended."""

    tokens: list[int]
    finish: str  # "eos" | "length"


def decode(model: Any, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float,
           stop: Sequence[int], seeds: Sequence[int], batch_size: int, pad_id: int,
           on_done: Callable[[int, Completion], None] | None = None,
           precision: str = "model") -> list[Completion]:
    """Sample a completion for every prompt (token ids) with continuous batching; see module doc."""
    if len(seeds) != len(prompts):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    results: list[Completion | None] = [None] * len(prompts)
    if not prompts:
        return []
    embed = model.get_input_embeddings().weight
    device, dtype = embed.device, embed.dtype  # the residual stream's (and KV cache's) dtype
    cast = linear_dtype(model, precision)
    n_layers, n_kv, head_dim = _kv_shape(model)
    n_slots = min(batch_size, len(prompts))
    capacity = max(len(p) for p in prompts) + max_new_tokens
    stop_set = set(int(s) for s in stop)
    pending = list(range(len(prompts)))[::-1]  # pop() takes the next in order
    cache = SlotCache(n_layers, n_slots, n_kv, head_dim, capacity, dtype, device)
    slot_row: list[int | None] = [None] * n_slots
    slot_tokens: list[list[int]] = [[] for _ in range(n_slots)]
    generators: list[torch.Generator] = [torch.Generator(device=device) for _ in range(n_slots)]
    next_token = torch.zeros(n_slots, dtype=torch.long)

    def finish(slot: int, reason: str) -> None:
        row = slot_row[slot]
        done = Completion(slot_tokens[slot], reason)
        results[row] = done
        slot_row[slot] = None
        if on_done is not None:
            on_done(row, done)

    def accept(slot: int, token: int) -> None:
        if token in stop_set:
            finish(slot, "eos")
            return
        slot_tokens[slot].append(token)
        if len(slot_tokens[slot]) >= max_new_tokens:
            finish(slot, "length")

    # merge and cast outside inference mode: parameters stay normal tensors
    with merged_lora(model), cast_linears(model, cast), torch.inference_mode():
        while True:
            free = [s for s in range(len(slot_row)) if slot_row[s] is None]
            if free and pending:
                chosen = free[:len(pending)]
                rows = [pending.pop() for _ in chosen]
                for s, r in zip(chosen, rows):
                    slot_row[s], slot_tokens[s] = r, []
                    generators[s] = torch.Generator(device=device).manual_seed(int(seeds[r]))
                inputs = _prefill_inputs([prompts[r] for r in rows], pad_id, device)
                slots = torch.tensor(chosen, dtype=torch.long, device=device)
                cache.prefill(slots, inputs["starts"], inputs["input_ids"].shape[1])
                logits = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                               position_ids=inputs["position_ids"], past_key_values=cache, use_cache=True,
                               logits_to_keep=1).logits[:, -1].float()
                picked = _pick(logits, temperature, [generators[s] for s in chosen])
                for s, t in zip(chosen, picked.tolist()):
                    next_token[s] = t
                    accept(s, t)
                continue  # refill any slot a one-token answer freed before decoding
            live = [s for s in range(len(slot_row)) if slot_row[s] is not None]
            if not live:
                break
            # nothing left to refill: drop finished rows once they are an eighth of the batch (a dead
            # row costs its share of every step; compaction copies the live KV columns once)
            if not pending and len(slot_row) - len(live) >= max(1, len(slot_row) // 8):
                keep = torch.tensor(live, dtype=torch.long, device=device)
                cache.keep(keep)
                slot_row = [slot_row[s] for s in live]
                slot_tokens = [slot_tokens[s] for s in live]
                generators = [generators[s] for s in live]
                next_token = next_token[live]
            cache.decode()
            width = cache._width
            col = torch.arange(width, device=device)
            lengths = cache.lengths
            mask = (col[None, :] >= cache.starts[:, None]) & (col[None, :] <= lengths[:, None])
            logits = model(input_ids=next_token[:, None].to(device), attention_mask=mask[:, None, None, :],
                           position_ids=(lengths - cache.starts)[:, None], past_key_values=cache,
                           use_cache=True).logits[:, -1].float()
            cache.advance(torch.tensor([r is not None for r in slot_row], device=device))
            picked = _pick(logits, temperature, generators).tolist()
            for s, t in enumerate(picked):
                if slot_row[s] is None:
                    continue
                next_token[s] = t
                accept(s, t)
    return results  # type: ignore[return-value]


def render_prompts(tokenizer: Any, conversations: Sequence[list[dict]]) -> list[list[int]]:
    """Token ids of each conversation with the chat template and the generation prompt."""
    out = []
    for messages in conversations:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        out.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return out


def chat_completions(model: Any, tokenizer: Any, conversations: Sequence[list[dict]], *, max_new_tokens: int,
                     temperature: float, seeds: Sequence[int], batch_size: int = 32,
                     on_done: Callable[[int, str, Completion], None] | None = None,
                     precision: str = "model") -> list[tuple[str, Completion]]:
    """(answer text, completion) for each conversation, sampled by ``decode``."""
    prompts = render_prompts(tokenizer, conversations)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def text(c: Completion) -> str:
        return tokenizer.decode(c.tokens, skip_special_tokens=True).strip()

    done = None if on_done is None else (lambda i, c: on_done(i, text(c), c))
    completions = decode(model, prompts, max_new_tokens=max_new_tokens, temperature=temperature,
                         stop=stop_ids(model, tokenizer), seeds=seeds, batch_size=batch_size, pad_id=pad,
                         on_done=done, precision=precision)
    return [(text(c), c) for c in completions]
