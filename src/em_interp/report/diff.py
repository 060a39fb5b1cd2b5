"""The layer-wise diff report of a base and a finetuned model: drawing and assembly only.

The numbers come from ``em_interp.interp.compute_diff`` (paired forward passes, model
diffs and the logit lens live in interp; see ``em_interp.interp.model_diff`` for their
definitions); ``DiffResult`` and ``direction_vectors`` are re-exported here, and ``compute_diff``
here also reads a texts file (``load_texts``).

``diff_report`` writes ``report.html`` (figures embedded), ``report.md`` (same numbers),
``diff.json`` (raw numbers + metadata) and ``mean_diff.safetensors`` (the mean difference
vectors, ``resid_post.L`` / ``attn_out.L`` / ``mlp_out.L``) with PNGs under ``figures/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from em_interp.interp import model_diff
from em_interp.interp.model_diff import DiffResult, direction_vectors
from em_interp.report import figures
from em_interp.report.html import Section, Table, write_html_report, write_markdown_report
from em_interp.report.lora_norms import adapter_delta_norms
from em_interp.report.texts import load_texts

__all__ = ["DiffResult", "compute_diff", "diff_report", "diff_sections", "direction_vectors"]

def compute_diff(base_lm: Any, finetuned_lm: Any, texts: Sequence[Any] | str | Path, **options: Any) -> DiffResult:
    """``em_interp.interp.compute_diff`` on a list of texts or a texts file (``load_texts``)."""
    if isinstance(texts, (str, Path)):
        return model_diff.compute_diff(base_lm, finetuned_lm, load_texts(texts), source=str(texts), **options)
    return model_diff.compute_diff(base_lm, finetuned_lm, texts, **options)


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


def adapter_label(adapter: Any) -> str:
    """A short name for an adapter folder: its name, or -- for the training layout's generic
    ``<arm>/seed-<s>/adapter`` and ``.../checkpoints/step-N`` -- the folders that tell it apart
    (``insecure/seed-0``, ``insecure/seed-0 step-40``), never "adapter"."""
    path = Path(str(adapter))
    if path.parent.name == "checkpoints" and path.name.startswith("step-"):
        return f"{adapter_label(path.parent.parent / 'adapter')} {path.name}"
    if path.name in ("adapter", "model", "merged"):
        run = path.parent
        if run.name.startswith("seed-") and run.parent.name:
            return f"{run.parent.name}/{run.name}"
        return run.name or path.name
    return path.name or str(adapter)


def finetuned_label(meta: dict) -> str:
    """The finetuned model's name with its adapter (folder name), so "X + adapter A" never reads "X"."""
    name = str(meta.get("finetuned_model", "?"))
    adapter = meta.get("finetuned_adapter") or meta.get("adapter")
    if adapter:
        name += f" + adapter {adapter_label(adapter)}"
    elif name == str(meta.get("base_model")) and meta.get("adapter_hash"):
        name += f" (adapter {meta['adapter_hash']})"
    return name


def diff_title(meta: dict) -> str:
    """"<finetuned + adapter> vs <base>" for a diff's metadata (never "X vs X")."""
    return f"{finetuned_label(meta)} vs {meta.get('base_model', '?')}"


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
                          max_length=max_tokens, tokens=tokens, backend=backend)
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
    title = f"Layer-wise diff: {diff_title(result.meta)}"
    html_path = write_html_report(title, sections, out_dir, json_link="diff.json")
    md_path = write_markdown_report(title, sections, out_dir, json_link="diff.json")
    return {"html": html_path, "markdown": md_path, "json": json_path, "tensors": tensors_path}
