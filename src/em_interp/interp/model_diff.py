"""Layer-wise diff between a base and a finetuned model on the same texts (the numbers; the
report draws them: ``em_interp.report.diff_report``).

``compute_diff`` runs both models on the same tokens and returns per layer L:

- ``resid_diff_norm[L]``: ``|| mean_t (h_ft[L] - h_base[L]) ||`` (resid_post, before the final norm);
- ``resid_norm[L]``: mean per-token ``|| h_base[L] ||`` (the scale), ``rel_diff = resid_diff_norm / resid_norm``;
- ``cos_direction[L]``: cosine of that mean difference with a given direction's layer-L vector;
- ``cos_prev[L]``: cosine with layer L-1's mean difference (``None`` at L = 0);
- ``logit_lens_kl[L]``: mean over tokens of KL(P_ft || P_base) in nats, where P = softmax of
  each model's own final norm + unembedding applied to its layer-L residual;
- ``attn_diff_norm[L]`` / ``mlp_diff_norm[L]``: ``‖mean Δattn_out‖`` and ``‖mean Δmlp_out‖``;
- the LoRA delta norms per module when the finetuned model is a peft model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from em_interp.errors import InterpError
from em_interp.interp.direction import Direction
from em_interp.interp.inputs import data_hash
from em_interp.interp.lora_analysis import is_peft, lora_delta_norms
from em_interp.interp.paired import KINDS, logit_lens, paired_batches
from em_interp.progress import Progress

KL_DEFINITION = "KL(P_finetuned ‖ P_base), nats, mean over tokens; logit lens = own final norm + unembedding"


@dataclass
class DiffResult:
    """Per-layer numbers of a base-vs-finetuned diff (lists indexed by layer) plus metadata."""

    layers: list[int]
    resid_diff_norm: list[float]
    resid_norm: list[float]
    rel_diff: list[float]
    cos_prev: list[float | None]
    logit_lens_kl: list[float]
    attn_diff_norm: list[float]
    mlp_diff_norm: list[float]
    cos_direction: list[float | None] | None = None
    lora: list[dict] | None = None
    meta: dict = field(default_factory=dict)
    mean_diff: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("mean_diff")
        return d


def _cos(a: torch.Tensor, b: torch.Tensor) -> float | None:
    na, nb = a.norm().item(), b.norm().item()
    if na == 0 or nb == 0:
        return None
    return float(torch.dot(a, b).item() / (na * nb))


def direction_vectors(direction: Any, n_layers: int, d_model: int) -> dict[int, torch.Tensor] | None:
    """Per-layer direction vectors from: a ``Direction`` (``em_interp.interp``; a single-layer one
    serves every layer) or its saved path, a mapping ``{layer: vector}`` (keys ``3`` or
    ``"resid_post.3"``), a tensor ``[n_layers, d]`` or one vector ``[d]`` for every layer."""
    if direction is None:
        return None
    if isinstance(direction, (str, Path)):
        direction = Direction.load(direction)
    if isinstance(direction, Direction):
        if max(direction.layers) >= n_layers:
            raise InterpError(f"direction has layer {max(direction.layers)}; the model has layers 0..{n_layers - 1}")
        single = len(direction.layers) == 1  # a single-layer direction serves every layer
        direction = {L: direction.vector(L, broadcast=single) for L in (range(n_layers) if single else direction.layers)}
    if isinstance(direction, torch.Tensor):
        t = direction.detach().float().cpu()
        if t.dim() == 1:
            out = {i: t for i in range(n_layers)}
        elif t.dim() == 2 and t.shape[0] == n_layers:
            out = {i: t[i] for i in range(n_layers)}
        else:
            raise InterpError(f"direction tensor has shape {tuple(t.shape)}; expected [{d_model}] or "
                              f"[{n_layers}, {d_model}]")
    elif isinstance(direction, dict):
        out = {}
        for k, v in direction.items():
            layer = int(str(k).rsplit(".", 1)[-1])  # 3, "3" or "resid_post.3"
            out[layer] = torch.as_tensor(v).detach().float().cpu().reshape(-1)
    else:
        raise InterpError(f"unsupported direction type {type(direction).__name__}")
    for layer, v in out.items():
        if v.numel() != d_model:
            raise InterpError(f"direction vector for layer {layer} has {v.numel()} values, model d_model is {d_model}")
        if not 0 <= layer < n_layers:
            raise InterpError(f"direction has layer {layer}; the model has layers 0..{n_layers - 1}")
    return out


def _describe(direction: Any) -> Any:
    if direction is None:
        return None
    if isinstance(direction, (str, Path)):
        return str(direction)
    if isinstance(direction, Direction):
        return {"method": direction.method, "model": direction.model, "site_kind": direction.site_kind,
                "reduce": direction.reduce, "layers": direction.layers, "data_hash": direction.data_hash}
    return type(direction).__name__


def _check_pair(base_lm, finetuned_lm) -> None:
    if base_lm.n_layers != finetuned_lm.n_layers or base_lm.d_model != finetuned_lm.d_model:
        raise InterpError(f"models differ in shape: base {base_lm.n_layers} layers x {base_lm.d_model}, "
                          f"finetuned {finetuned_lm.n_layers} layers x {finetuned_lm.d_model}")
    if len(base_lm.tokenizer) != len(finetuned_lm.tokenizer):
        raise InterpError(f"tokenizers differ: vocab {len(base_lm.tokenizer)} vs {len(finetuned_lm.tokenizer)}; "
                          "a diff report needs the same tokens for both models")


def compute_diff(
    base_lm,
    finetuned_lm,
    texts: Sequence[Any],
    *,
    direction: Any = None,
    batch_size: int = 4,
    max_length: int | None = 256,
    tokens: str = "all",
    backend: str = "hf",
    kl_chunk: int = 256,
    source: str | None = None,
    max_tokens: int | None = None,
    progress: bool | None = None,
) -> DiffResult:
    """Per-layer diff numbers (see the module docstring).

    ``texts``: a list (strings, message lists, ``{"messages": ...}`` dicts, ``ChatExample``);
    ``source``: where they came from (recorded). ``tokens``: ``"all"`` non-pad tokens, the
    ``"prompt"`` or the ``"response"`` (last assistant turn) tokens. ``max_length``: tokens
    per text (``max_tokens`` is its deprecated name). ``backend``: the interp backend.
    ``progress``: a bar with texts/s and tokens/s (``None``: when stderr is a terminal)."""
    _check_pair(base_lm, finetuned_lm)
    if max_tokens is not None:
        max_length = max_tokens
    if isinstance(texts, (str, Path)):
        raise InterpError("compute_diff takes a list of texts; read a file with em_interp.report.load_texts",
                          field="texts")
    texts = list(texts)
    if not texts:
        raise InterpError("no texts given")
    n_layers, d = base_lm.n_layers, base_lm.d_model
    dirs = direction_vectors(direction, n_layers, d)
    dev = base_lm.device

    f64 = torch.float64
    sums = {k: torch.zeros(n_layers, d, dtype=f64) for k in KINDS}
    norm_sum = torch.zeros(n_layers, dtype=f64)
    kl_sum = torch.zeros(n_layers, dtype=f64)
    n_tok = 0
    with Progress(len(texts), "model diff", "text", progress=progress) as bar:
        for pb in paired_batches(base_lm, finetuned_lm, texts, batch_size=batch_size, max_length=max_length,
                                 tokens=tokens, backend=backend):
            m_b = pb.mask.to(dev)
            m_f = pb.mask.to(finetuned_lm.device)
            n_tok += int(pb.mask.sum())
            for kind in KINDS:
                for L in range(n_layers):
                    delta = pb.finetuned[kind][L][m_f].float().to(dev) - pb.base[kind][L][m_b].float()
                    sums[kind][L] += delta.sum(0).double().cpu()
            for L in range(n_layers):
                hb = pb.base["resid_post"][L][m_b]                      # [N, d], the model's dtype
                hf = pb.finetuned["resid_post"][L][m_f]
                norm_sum[L] += hb.float().norm(dim=-1).double().sum().cpu()
                for c in range(0, hb.shape[0], kl_chunk):
                    lp_b = torch.log_softmax(logit_lens(base_lm, hb[c:c + kl_chunk]).float(), -1)
                    lp_f = torch.log_softmax(logit_lens(finetuned_lm, hf[c:c + kl_chunk]).float(), -1).to(dev)
                    kl_sum[L] += (lp_f.exp() * (lp_f - lp_b)).sum(-1).double().sum().cpu()
            bar.update(int(pb.mask.shape[0]), tokens=int(pb.mask.sum()))
            del pb
    if n_tok == 0:
        raise InterpError("the texts produced no tokens" + (" with a response" if tokens == "response" else ""))

    means = {k: (v / n_tok).float() for k, v in sums.items()}
    resid_diff_norm = [float(means["resid_post"][L].norm()) for L in range(n_layers)]
    resid_norm = [float(norm_sum[L] / n_tok) for L in range(n_layers)]
    result = DiffResult(
        layers=list(range(n_layers)),
        resid_diff_norm=resid_diff_norm,
        resid_norm=resid_norm,
        rel_diff=[a / b if b > 0 else math.nan for a, b in zip(resid_diff_norm, resid_norm)],
        cos_prev=[None] + [_cos(means["resid_post"][L], means["resid_post"][L - 1]) for L in range(1, n_layers)],
        logit_lens_kl=[float(kl_sum[L] / n_tok) for L in range(n_layers)],
        attn_diff_norm=[float(means["attn_out"][L].norm()) for L in range(n_layers)],
        mlp_diff_norm=[float(means["mlp_out"][L].norm()) for L in range(n_layers)],
        cos_direction=None if dirs is None else [
            _cos(means["resid_post"][L], dirs[L]) if L in dirs else None for L in range(n_layers)],
        meta={
            "base_model": base_lm.name, "finetuned_model": finetuned_lm.name,
            "finetuned_adapter": finetuned_lm.adapter,
            "adapter_hash": finetuned_lm.info.get("adapter_hash") if finetuned_lm.info else None,
            "n_texts": len(texts), "n_tokens": n_tok, "texts_hash": data_hash(texts),
            "texts_source": source, "max_length": max_length, "site": "resid_post (before final norm)",
            "tokens": tokens, "backend": backend,
            "token_rule": {"all": "all non-pad tokens", "prompt": "prompt tokens",
                           "response": "response (last assistant turn) tokens"}.get(tokens, tokens)
                          + " (chats rendered with the chat template)",
            "kl": KL_DEFINITION, "direction": _describe(direction),
        },
        mean_diff={f"{kind}.{L}": means[kind][L].contiguous() for kind in KINDS for L in range(n_layers)},
    )
    if is_peft(finetuned_lm.model):
        result.lora = lora_delta_norms(finetuned_lm.model)
    return result


