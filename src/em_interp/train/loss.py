"""The training loss at supervised positions only, with a chunked LM head.

The decoder body runs on the whole batch; the LM head and the cross-entropy run only
at the positions whose shifted label is supervised (not ``IGNORE_INDEX``), in chunks
of rows, so neither compute nor memory scales with ``vocab x sequence`` (a prompt
token never meets the 49k-152k-row head). ``LinearCrossEntropy`` computes each
chunk's loss and its gradients in the forward pass (softmax minus one-hot), so the
logits of a chunk are freed at once and backward only scales the stored gradients:
the same three matmuls as the plain computation, no recompute. The summed loss equals
``cross_entropy(model(x).logits, shifted labels, reduction="sum")`` within fp32
rounding (test).

Models whose head is not a plain ``nn.Linear`` or that transform the logits
(soft-capping, scaling) fall back to the full-logits computation.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

from em_interp.train.encode import IGNORE_INDEX

CHUNK_ELEMENTS = 1 << 24  # logits elements per chunk (64 MB in fp32)
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class _Identity(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class LinearCrossEntropy(torch.autograd.Function):
    """sum_i CE(h_i @ W.T + b, t_i) over rows, chunked; gradients computed in forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                targets: torch.Tensor, chunk_rows: int) -> torch.Tensor:
        need_h, need_w, need_b = ctx.needs_input_grad[0], ctx.needs_input_grad[1], \
            bias is not None and ctx.needs_input_grad[2]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        for start in range(0, hidden.shape[0], chunk_rows):
            h = hidden[start:start + chunk_rows]
            t = targets[start:start + chunk_rows]
            logits = torch.nn.functional.linear(h, weight, bias).float()
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            if need_h or need_w or need_b:
                probs = logits.sub_(lse[:, None]).exp_()            # softmax, in place
                probs[torch.arange(len(t), device=t.device), t] -= 1.0  # d loss / d logits
                g = probs.to(h.dtype) if h.dtype != probs.dtype else probs
                if need_h:
                    grad_h[start:start + chunk_rows] = g @ weight.to(g.dtype)
                if need_w:
                    grad_w += (g.t() @ h).float()
                if need_b:
                    grad_b += probs.sum(0)
            del logits
        ctx.save_for_backward(grad_h if need_h else None, grad_w if need_w else None,
                              grad_b if need_b else None)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):  # type: ignore[override]
        grad_h, grad_w, grad_b = ctx.saved_tensors
        w_dtype, b_dtype = ctx.dtypes
        return (grad_h * grad_out.to(grad_h.dtype) if grad_h is not None else None,
                (grad_w * grad_out).to(w_dtype) if grad_w is not None else None,
                (grad_b * grad_out).to(b_dtype) if grad_b is not None else None,
                None, None)


def output_head(model: Any) -> tuple[Any, str, torch.nn.Module]:
    """(parent module, attribute name, head) of the LM head of a (peft-wrapped) causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    for name, module in base.named_modules():
        for attr, child in module.named_children():
            if child is head:
                return module, attr, head
    raise ValueError("the model's output embeddings are not a child module")


def supports_headless(model: Any) -> bool:
    """True when the head is a plain linear layer applied to the last hidden state."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    config = getattr(base, "config", None)
    transformed = any(getattr(config, k, None) not in (None, 1, 1.0) for k in _LOGIT_TRANSFORMS)
    return type(head) is torch.nn.Linear and not transformed


@contextlib.contextmanager
def head_bypassed(model: Any) -> Iterator[torch.nn.Module]:
    """Inside, ``model(...).logits`` are the final hidden states; yields the real head."""
    parent, attr, head = output_head(model)
    setattr(parent, attr, _Identity())
    try:
        yield head
    finally:
        setattr(parent, attr, head)


def shifted_labels(labels: torch.Tensor) -> torch.Tensor:
    """The label each position predicts (token t+1 at position t); the last is ignored."""
    return torch.nn.functional.pad(labels[:, 1:], (0, 1), value=IGNORE_INDEX)


def supervised_loss_sum(model: Any, batch: dict[str, torch.Tensor], labels: torch.Tensor, *,
                        chunk_elements: int = CHUNK_ELEMENTS) -> torch.Tensor:
    """Summed next-token cross-entropy over the supervised positions of ``batch``."""
    target = shifted_labels(labels)
    if not supports_headless(model):
        return full_logits_loss_sum(model, batch, labels)
    with head_bypassed(model) as head:
        hidden = model(**batch, use_cache=False).logits
    mask = target != IGNORE_INDEX
    rows = hidden[mask]
    chunk_rows = max(1, chunk_elements // head.weight.shape[0])
    return LinearCrossEntropy.apply(rows, head.weight, head.bias, target[mask], chunk_rows)


def full_logits_loss_sum(model: Any, batch: dict[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
    """The plain computation (full-vocabulary logits at every position), for reference."""
    logits = model(**batch, use_cache=False).logits.float()
    return torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]),
                                             shifted_labels(labels).reshape(-1),
                                             ignore_index=IGNORE_INDEX, reduction="sum")
