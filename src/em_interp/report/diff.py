"""Layer-wise diff between a base and a finetuned model on the same texts, and its report.

``compute_diff`` runs both models on the same tokens (every non-pad token of every text)
and returns per layer L:

- ``resid_diff_norm[L]``: ``|| mean_t (h_ft[L] - h_base[L]) ||`` (resid_post, before the final norm);
- ``resid_norm[L]``: mean per-token ``|| h_base[L] ||`` (the scale), ``rel_diff = resid_diff_norm / resid_norm``;
- ``cos_direction[L]``: cosine of that mean difference with a given direction's layer-L vector;
- ``cos_prev[L]``: cosine with layer L-1's mean difference (``None`` at L = 0);
- ``logit_lens_kl[L]``: mean over tokens of KL(P_ft || P_base) in nats, where P = softmax of
  each model's own final norm + unembedding applied to its layer-L residual;
- ``attn_diff_norm[L]`` / ``mlp_diff_norm[L]``: ``‖mean Δattn_out‖`` and ``‖mean Δmlp_out‖``;
- the LoRA delta norms per module when the finetuned model is a peft model or an adapter is given.

``diff_report`` writes ``report.html`` (figures embedded), ``report.md`` (same numbers),
``diff.json`` (raw numbers + metadata) and ``mean_diff.safetensors`` (the mean difference
vectors, ``resid_post.L`` / ``attn_out.L`` / ``mlp_out.L``) with PNGs under ``figures/``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from em_interp.report import figures
from em_interp.interp import Direction, data_hash
from em_interp.report.activations import KINDS, paired_batches, unembed
from em_interp.report.errors import ReportError
from em_interp.report.html import Section, Table, write_html_report, write_markdown_report
from em_interp.report.lora_norms import adapter_delta_norms, is_peft, lora_delta_norms
from em_interp.report.texts import load_texts

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
            raise ReportError(f"direction has layer {max(direction.layers)}; the model has layers 0..{n_layers - 1}")
        single = len(direction.layers) == 1  # a single-layer direction serves every layer
        direction = {L: direction.vector(L) for L in (range(n_layers) if single else direction.layers)}
    if isinstance(direction, torch.Tensor):
        t = direction.detach().float().cpu()
        if t.dim() == 1:
            out = {i: t for i in range(n_layers)}
        elif t.dim() == 2 and t.shape[0] == n_layers:
            out = {i: t[i] for i in range(n_layers)}
        else:
            raise ReportError(f"direction tensor has shape {tuple(t.shape)}; expected [{d_model}] or "
                              f"[{n_layers}, {d_model}]")
    elif isinstance(direction, dict):
        out = {}
        for k, v in direction.items():
            layer = int(str(k).rsplit(".", 1)[-1])  # 3, "3" or "resid_post.3"
            out[layer] = torch.as_tensor(v).detach().float().cpu().reshape(-1)
    else:
        raise ReportError(f"unsupported direction type {type(direction).__name__}")
    for layer, v in out.items():
        if v.numel() != d_model:
            raise ReportError(f"direction vector for layer {layer} has {v.numel()} values, model d_model is {d_model}")
        if not 0 <= layer < n_layers:
            raise ReportError(f"direction has layer {layer}; the model has layers 0..{n_layers - 1}")
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
        raise ReportError(f"models differ in shape: base {base_lm.n_layers} layers x {base_lm.d_model}, "
                          f"finetuned {finetuned_lm.n_layers} layers x {finetuned_lm.d_model}")
    if len(base_lm.tokenizer) != len(finetuned_lm.tokenizer):
        raise ReportError(f"tokenizers differ: vocab {len(base_lm.tokenizer)} vs {len(finetuned_lm.tokenizer)}; "
                          "a diff report needs the same tokens for both models")


def compute_diff(
    base_lm,
    finetuned_lm,
    texts: Sequence[Any] | str | Path,
    *,
    direction: Any = None,
    batch_size: int = 4,
    max_tokens: int | None = 256,
    tokens: str = "all",
    backend: str = "hf",
    kl_chunk: int = 256,
) -> DiffResult:
    """Per-layer diff numbers (see the module docstring).

    ``texts``: a list (strings, message lists, ``{"messages": ...}`` dicts, ``ChatExample``)
    or a file (``load_texts``). ``tokens``: ``"all"`` non-pad tokens or only the ``"response"``
    (last assistant turn) tokens. ``backend``: the ``em_interp.interp`` backend that hooks."""
    _check_pair(base_lm, finetuned_lm)
    source = None
    if isinstance(texts, (str, Path)):
        source = str(texts)
        texts = load_texts(texts)
    texts = list(texts)
    if not texts:
        raise ReportError("no texts given")
    n_layers, d = base_lm.n_layers, base_lm.d_model
    dirs = direction_vectors(direction, n_layers, d)
    dev = base_lm.device

    f64 = torch.float64
    sums = {k: torch.zeros(n_layers, d, dtype=f64) for k in KINDS}
    norm_sum = torch.zeros(n_layers, dtype=f64)
    kl_sum = torch.zeros(n_layers, dtype=f64)
    n_tok = 0
    for pb in paired_batches(base_lm, finetuned_lm, texts, batch_size=batch_size, max_tokens=max_tokens,
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
                lp_b = torch.log_softmax(unembed(base_lm, hb[c:c + kl_chunk]).float(), -1)
                lp_f = torch.log_softmax(unembed(finetuned_lm, hf[c:c + kl_chunk]).float(), -1).to(dev)
                kl_sum[L] += (lp_f.exp() * (lp_f - lp_b)).sum(-1).double().sum().cpu()
        del pb
    if n_tok == 0:
        raise ReportError("the texts produced no tokens" + (" with a response" if tokens == "response" else ""))

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
            "texts_source": source, "max_tokens": max_tokens, "site": "resid_post (before final norm)",
            "tokens": tokens, "backend": backend,
            "token_rule": ("all non-pad tokens" if tokens == "all" else "response (last assistant turn) tokens")
                          + " (chats rendered with the chat template)",
            "kl": KL_DEFINITION, "direction": _describe(direction),
        },
        mean_diff={f"{kind}.{L}": means[kind][L].contiguous() for kind in KINDS for L in range(n_layers)},
    )
    if is_peft(finetuned_lm.model):
        result.lora = lora_delta_norms(finetuned_lm.model)
    return result


def _lora_matrix(rows: list[dict]) -> tuple[list[str], list[str], list[list[float | None]]]:
    layers = sorted({r["layer"] for r in rows if r["layer"] is not None})
    kinds = sorted({r["module"] for r in rows})
    cell = {(r["layer"], r["module"]): r["norm"] for r in rows}
    return ([str(L) for L in layers], kinds, [[cell.get((L, k)) for k in kinds] for L in layers])


def diff_sections(result: DiffResult, fig_dir: Path) -> list[Section]:
    """The report's sections (figures written into ``fig_dir``)."""
    L = result.layers
    m = result.meta
    secs = [Section("Setup", text=(
        f"Base: {m.get('base_model')}. Finetuned: {m.get('finetuned_model')}"
        + (f" + adapter {m.get('finetuned_adapter')}" if m.get("finetuned_adapter") else "")
        + f". {m.get('n_texts')} texts, {m.get('n_tokens')} tokens (texts hash {m.get('texts_hash')}). "
        f"Activations: {m.get('site')}, {m.get('token_rule')}. Logit-lens KL: {m.get('kl')}."))]

    f1 = figures.layer_plot({"‖mean Δresid‖": result.resid_diff_norm}, fig_dir / "resid_diff_norm.png",
                            title="Norm of the mean residual difference (finetuned − base)",
                            ylabel="L2 norm (residual units)", layers=L)
    f1b = figures.layer_plot({"‖mean Δresid‖ / mean ‖resid_base‖": result.rel_diff},
                             fig_dir / "resid_diff_relative.png",
                             title="Mean residual difference relative to the residual norm",
                             ylabel="ratio (unitless)", layers=L)
    rows = [[l, result.resid_diff_norm[i], result.resid_norm[i], result.rel_diff[i], result.cos_prev[i]]
            + ([result.cos_direction[i]] if result.cos_direction is not None else [])
            for i, l in enumerate(L)]
    cols = ["layer", "‖mean Δresid‖", "mean ‖resid_base‖", "relative", "cos(Δ_L, Δ_L-1)"] + (
        ["cos(Δ_L, direction)"] if result.cos_direction is not None else [])
    secs.append(Section("Residual stream difference", figures=[f1, f1b],
                        tables=[Table(cols, rows, caption="Per-layer residual difference")],
                        text="Mean over all tokens of the finetuned model's resid_post minus the base model's."))

    cos_series = {"cos with previous layer's Δ": result.cos_prev}
    if result.cos_direction is not None:
        cos_series["cos with direction"] = result.cos_direction
    f2 = figures.layer_plot(cos_series, fig_dir / "cosines.png",
                            title="Cosine of the mean residual difference", ylabel="cosine similarity", layers=L)
    secs.append(Section("Direction of the difference", figures=[f2]))

    f3 = figures.layer_plot({"KL": result.logit_lens_kl}, fig_dir / "logit_lens_kl.png",
                            title="Logit-lens KL(finetuned ‖ base) per layer", ylabel="KL (nats / token)", layers=L)
    secs.append(Section("Logit lens", figures=[f3], tables=[Table(
        ["layer", "KL (nats/token)"], [[l, result.logit_lens_kl[i]] for i, l in enumerate(L)],
        caption="Logit-lens KL")]))

    f4 = figures.layer_plot({"attention ‖mean Δattn_out‖": result.attn_diff_norm,
                             "MLP ‖mean Δmlp_out‖": result.mlp_diff_norm}, fig_dir / "attn_vs_mlp.png",
                            title="Attention vs MLP contribution to the difference",
                            ylabel="L2 norm (residual units)", layers=L)
    secs.append(Section("Attention vs MLP", figures=[f4], tables=[Table(
        ["layer", "‖mean Δattn_out‖", "‖mean Δmlp_out‖"],
        [[l, result.attn_diff_norm[i], result.mlp_diff_norm[i]] for i, l in enumerate(L)],
        caption="Per-layer component differences")]))

    if result.lora:
        row_labels, kinds, mat = _lora_matrix(result.lora)
        figs = []
        if row_labels:
            transposed = [[mat[i][j] for i in range(len(row_labels))] for j in range(len(kinds))]
            figs.append(figures.heatmap(transposed, fig_dir / "lora_delta_norms.png", row_labels=kinds,
                                        col_labels=row_labels, title="LoRA ‖ΔW‖_F per module and layer",
                                        xlabel="layer", ylabel="module", cbar_label="Frobenius norm",
                                        fmt=".2g"))
        secs.append(Section("LoRA delta norms", figures=figs, tables=[Table(
            ["layer", "module", "rank", "‖ΔW‖_F"],
            [[r["layer"], r["module"], r["rank"], r["norm"]] for r in result.lora],
            caption="Per-module LoRA weight deltas (scaling included)")]))
    return secs


def diff_report(
    base_lm,
    finetuned_lm,
    texts: Sequence[Any] | str | Path,
    out_dir: str | Path,
    direction: Any = None,
    adapter: str | Path | None = None,
    *,
    batch_size: int = 4,
    max_tokens: int | None = 256,
    tokens: str = "all",
    backend: str = "hf",
) -> dict[str, Path]:
    """Compute the diff and write report.html, report.md, diff.json, mean_diff.safetensors, figures/.

    ``adapter``: a peft adapter folder whose delta norms are reported when ``finetuned_lm``
    is not itself a peft model (e.g. merged weights). Returns the written paths
    (``html``, ``markdown``, ``json``, ``tensors``).
    """
    from safetensors.torch import save_file

    result = compute_diff(base_lm, finetuned_lm, texts, direction=direction, batch_size=batch_size,
                          max_tokens=max_tokens, tokens=tokens, backend=backend)
    if adapter is not None:
        if result.lora is None:
            result.lora = adapter_delta_norms(adapter)
        result.meta["adapter"] = str(adapter)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "diff.json"
    json_path.write_text(json.dumps(result.to_json(), indent=2), encoding="utf-8")
    tensors_path = out_dir / "mean_diff.safetensors"
    save_file(result.mean_diff, str(tensors_path), metadata={
        "base_model": str(result.meta["base_model"]), "finetuned_model": str(result.meta["finetuned_model"]),
        "method": f"mean difference finetuned - base over {result.meta['tokens']} tokens", "texts_hash": result.meta["texts_hash"],
        "n_tokens": str(result.meta["n_tokens"])})
    sections = diff_sections(result, out_dir / "figures")
    title = f"Layer-wise diff: {result.meta['finetuned_model']} vs {result.meta['base_model']}"
    html_path = write_html_report(title, sections, out_dir, json_link="diff.json")
    md_path = write_markdown_report(title, sections, out_dir, json_link="diff.json")
    return {"html": html_path, "markdown": md_path, "json": json_path, "tensors": tensors_path}
