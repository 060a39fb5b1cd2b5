"""Canonical hook sites (``resid_pre.L``, ``resid_mid.L``, ``resid_post.L``, ``attn_out.L``, ``mlp_out.L``).

One naming scheme for every backend. ``parse_site`` validates a name against a model
(unknown kind or layer out of range -> ``InterpError`` listing what is valid); the
TransformerLens names ``blocks.L.hook_resid_post`` etc. are accepted as aliases and
negative layers count from the end (``resid_post.-1`` is the last layer). ``resid_mid.L``
is the residual stream between attention and MLP (``resid_pre.L + attn_out.L``);
``decoder_layers`` finds the decoder stack of Llama / Qwen2 / Gemma3-style HF models,
unwrapping peft wrappers; ``layer_module`` / ``site_module`` return the module a site
hooks on the plain HF model. ``resid_post.L`` is the decoder layer's output *before*
the final norm (HF's ``hidden_states[L + 1]`` except for the last layer, where HF applies
the final norm).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from em_interp.errors import InterpError

SITE_KINDS = ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")
_TL_SITE = re.compile(r"^blocks\.(-?\d+)\.hook_(resid_pre|resid_mid|resid_post|attn_out|mlp_out)$")


@dataclass(frozen=True, order=True)
class Site:
    """A parsed site: ``layer`` first so sorting follows execution order."""

    layer: int
    kind: str

    @property
    def name(self) -> str:
        return f"{self.kind}.{self.layer}"

    @property
    def tl_name(self) -> str:
        """The TransformerLens hook name of this site."""
        return f"blocks.{self.layer}.hook_{self.kind}"

    def __str__(self) -> str:
        return self.name


def unwrap(model: Any) -> Any:
    """The plain transformers ``*ForCausalLM`` under a peft wrapper (or the model itself)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        PeftModel = ()  # type: ignore[assignment]
    if isinstance(model, PeftModel):
        return model.base_model.model
    return model


def decoder_layers(model: Any):
    """The ``nn.ModuleList`` of decoder layers (``model.model.layers`` for Llama/Qwen2/Gemma3)."""
    m = unwrap(model)
    for path in ("model.layers", "model.language_model.layers", "transformer.h", "gpt_neox.layers"):
        obj = m
        try:
            for part in path.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            continue
        return obj
    raise InterpError(f"cannot find the decoder layers of {type(m).__name__}; "
                      "supported: Llama, Qwen2, Gemma3-style models (model.model.layers)")


def body_of(model: Any) -> Any:
    """The decoder body (``model.model``) that runs embeddings + layers without the LM head."""
    m = unwrap(model)
    return getattr(m, "model", m)


def n_layers_of(model: Any) -> int:
    return len(decoder_layers(model))


def d_model_of(model: Any) -> int:
    return int(unwrap(model).config.hidden_size)


def parse_site(name: str | Site, n_layers: int) -> Site:
    """Validate ``"resid_post.12"`` (or ``"blocks.12.hook_resid_post"``, or ``"resid_post.-1"``)
    against a model with ``n_layers`` layers; negative layers count from the end."""
    if isinstance(name, Site):
        site = name
    else:
        text = str(name).strip()
        tl = _TL_SITE.match(text)
        kind, _, layer = (tl.group(2), "", tl.group(1)) if tl else text.rpartition(".")
        if kind not in SITE_KINDS or not layer.lstrip("-").isdigit():
            raise InterpError(f"unknown site '{name}'; valid sites: "
                              + ", ".join(f"{k}.{{0..{n_layers - 1}}}" for k in SITE_KINDS)
                              + " (or TransformerLens names blocks.L.hook_<kind>; negative L counts from the end)",
                              field="site")
        site = Site(int(layer), kind)
    if -n_layers <= site.layer < 0:
        site = Site(site.layer + n_layers, site.kind)
    if not 0 <= site.layer < n_layers:
        raise InterpError(f"layer {site.layer} out of range in site '{name}'; "
                          f"the model has layers 0..{n_layers - 1} (or -{n_layers}..-1)", field="site")
    return site


def parse_sites(names: Any, n_layers: int) -> list[Site]:
    """Parse a site name or list of names; duplicates removed, execution order kept."""
    if isinstance(names, (str, Site)):
        names = [names]
    sites = sorted({parse_site(n, n_layers) for n in names}, key=_exec_key)
    if not sites:
        raise InterpError("no sites given", field="sites")
    return sites


_KIND_ORDER = {"resid_pre": 0, "attn_out": 1, "resid_mid": 2, "mlp_out": 3, "resid_post": 4}


def _exec_key(site: Site) -> tuple[int, int]:
    return site.layer, _KIND_ORDER[site.kind]


def check_layers(layers: Any, n_layers: int) -> list[int]:
    """``"all"``, an int or a list of ints (negative = from the end) -> validated sorted layer indices."""
    if layers == "all" or layers is None:
        return list(range(n_layers))
    if isinstance(layers, int):
        layers = [layers]
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n_layers <= layer < n_layers:
            raise InterpError(f"layer {layer!r} out of range; the model has layers 0..{n_layers - 1}",
                              field="layers")
        out.append(layer % n_layers)
    return sorted(set(out))


def site_module(model: Any, site: Site):
    """The module whose forward hook (pre-hook for ``resid_pre`` / ``resid_mid``) gives the site's tensor.

    ``resid_mid`` is the input of the norm in front of the MLP (``post_attention_layernorm``
    in Llama / Qwen2, ``pre_feedforward_layernorm`` in Gemma3)."""
    layer = decoder_layers(model)[site.layer]
    if site.kind in ("resid_pre", "resid_post"):
        return layer
    if site.kind == "resid_mid":
        for attr in ("pre_feedforward_layernorm", "post_attention_layernorm", "ln_2"):
            if hasattr(layer, attr):
                return getattr(layer, attr)
        raise InterpError(f"{type(layer).__name__} has no pre-MLP norm for site '{site.name}'")
    name = "self_attn" if site.kind == "attn_out" else "mlp"
    for attr in ((name,) if name == "mlp" else ("self_attn", "attn", "attention")):
        if hasattr(layer, attr):
            return getattr(layer, attr)
    raise InterpError(f"{type(layer).__name__} has no '{name}' submodule for site '{site.name}'")


def first_tensor(output: Any):
    """A module output as a tensor: transformers 5 layers return tensors, attention a tuple."""
    if isinstance(output, (tuple, list)):
        return output[0]
    return output


def replace_first(output: Any, new):
    """``output`` with its hidden-state tensor replaced (keeps tuple structure)."""
    if isinstance(output, tuple):
        return (new,) + tuple(output[1:])
    if isinstance(output, list):
        return [new] + list(output[1:])
    return new
