"""Interop with the tools researchers hold, each with the real package on the tiny model:
a (model, tokenizer) pair, peft, an nnsight LanguageModel, a TransformerLens TransformerBridge
and HookedTransformer taken directly by capture / steer / ablate / patching; directions
exported to and imported from steering-vectors and repeng (identical edits and greedy tokens)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch

from em_interp.interp import Direction, ablate, capture, make_backend, run_with_cache, steer
from em_interp.interp.interop import (from_control_vector, from_steering_vector, import_repeng, to_control_vector,
                                      to_steering_vector)

TEXTS = ["plain text about the weather", "What is your wish? I wish for peace."]


def _close(a, b, rtol=1e-5):
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * float(b.abs().max()))


@pytest.fixture(scope="module")
def direction():
    g = torch.Generator().manual_seed(7)
    return Direction({1: torch.randn(64, generator=g), 2: torch.randn(64, generator=g)}, model="tiny-llama")


def _hidden_mean(model, tok, text, layer):
    ids = tok(text, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        hs = model(ids, output_hidden_states=True).hidden_states
    return hs[layer + 1][0].mean(0)


def test_capture_takes_a_model_tokenizer_pair_as_written(tiny_lm):
    hf_model, tokenizer = tiny_lm.model, tiny_lm.tokenizer
    from em_interp import interp

    cap = interp.capture((hf_model, tokenizer), ["plain text", "another plain text"],
                         sites=["blocks.1.hook_resid_post"])
    assert isinstance(cap, interp.Capture) and cap.sites == ["resid_post.1"]
    want = torch.stack([_hidden_mean(hf_model, tokenizer, t, 1) for t in ["plain text", "another plain text"]]).mean(0)
    _close(cap["blocks.1.hook_resid_post"], want)  # plain strings reduce over all their tokens
    assert torch.equal(cap["resid_post.1"], cap["blocks.1.hook_resid_post"])


def test_peft_pair_and_its_merge_agree(tiny_lm):
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(copy.deepcopy(tiny_lm.model), LoraConfig(r=2, target_modules=["q_proj", "down_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    peft_model.eval()
    sites = ["resid_post.3"]
    got = capture((peft_model, tiny_lm.tokenizer), TEXTS, sites)
    merged = capture((copy.deepcopy(peft_model).merge_and_unload(), tiny_lm.tokenizer), TEXTS, sites)
    _close(got["resid_post.3"], merged["resid_post.3"], rtol=1e-4)
    assert (got["resid_post.3"] - capture(tiny_lm, TEXTS, sites)["resid_post.3"]).abs().max() > 1e-3


def test_nnsight_language_model_is_taken_directly(tiny_lm, direction):
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nn_model = LanguageModel(tiny_lm.model, tokenizer=tiny_lm.tokenizer)
    sites = ["resid_pre.0", "resid_post.2"]
    ours = capture(tiny_lm, TEXTS, sites, per_example=True)
    for backend in (None, "nnsight"):
        got = capture(nn_model, TEXTS, sites, per_example=True, backend=backend)
        for s in sites:
            _close(got.per_example[s], ours.per_example[s], rtol=1e-5)
    ids = tiny_lm.tokenizer(TEXTS[1], return_tensors="pt")["input_ids"]
    with steer(tiny_lm, direction, 3.0):
        want = run_with_cache(tiny_lm, ids).logits
    with steer(nn_model, direction, 3.0):  # our hooks sit on the module nnsight traces
        with torch.no_grad(), nn_model.trace(ids):
            out = nn_model.lm_head.output.save()
    _close(out, want)


@pytest.fixture(scope="module")
def bridge(tiny_lm):
    from transformer_lens.model_bridge import TransformerBridge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformerBridge.boot_transformers("tiny-llama", hf_model=copy.deepcopy(tiny_lm.model),
                                                   tokenizer=copy.deepcopy(tiny_lm.tokenizer), device="cpu")


def test_transformer_bridge_capture_matches_its_own_run_with_cache(bridge, tiny_lm):
    text = TEXTS[0]
    _, cache = bridge.run_with_cache(text)  # TransformerLens prepends its BOS
    got = capture(bridge, [text], ["blocks.2.hook_resid_post", "resid_mid.1"], tokens="all")
    _close(got["blocks.2.hook_resid_post"], cache["blocks.2.hook_resid_post"][0].mean(0))
    _close(got["resid_mid.1"], cache["blocks.1.hook_resid_mid"][0].mean(0))
    # our hf backend with prepend_bos=True reads the same numbers from the plain module
    hf = capture(tiny_lm, [text], ["resid_post.2"], tokens="all", prepend_bos=True)
    _close(hf["resid_post.2"], got["resid_post.2"], rtol=1e-4)
    # the hf model's transformer_lens backend is built once per model object, then reused
    assert make_backend(tiny_lm, "transformer_lens") is make_backend(tiny_lm, "transformer_lens")


def test_transformer_bridge_steer_ablate_patch(bridge, tiny_lm, direction):
    ids = bridge.to_tokens(TEXTS[1])
    with steer(tiny_lm, direction, 4.0):
        want = run_with_cache(tiny_lm, ids).logits
    with steer(bridge, direction, 4.0):
        got = run_with_cache(bridge, ids).logits
    _close(got, want, rtol=1e-4)
    with ablate(bridge, direction, layers=[2]):
        cache = run_with_cache(bridge, ids, ["resid_post.2"])
    u = direction[2] / direction[2].norm()
    assert float((cache["resid_post.2"][0] @ u).abs().max()) < 1e-4 * float(cache["resid_post.2"].abs().max())


def test_hooked_transformer_is_taken_directly(tiny_lm):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=32, n_ctx=64, d_head=8, n_heads=4, d_mlp=64,
                                  d_vocab=len(tiny_lm.tokenizer), act_fn="gelu", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ht = HookedTransformer(cfg, tokenizer=copy.deepcopy(tiny_lm.tokenizer))
    ht.eval()
    text = TEXTS[0]
    _, cache = ht.run_with_cache(text)
    got = capture(ht, [text], ["blocks.1.hook_resid_post", "mlp_out.0"], tokens="all")
    _close(got["resid_post.1"], cache["blocks.1.hook_resid_post"][0].mean(0))
    _close(got["mlp_out.0"], cache["blocks.0.hook_mlp_out"][0].mean(0))
    d = Direction({0: torch.ones(32)})
    ids = ht.to_tokens(text)
    with steer(ht, d, 2.0):
        steered = run_with_cache(ht, ids, ["resid_post.0"])
    plain = run_with_cache(ht, ids, ["resid_post.0"])
    _close(steered["resid_post.0"], plain["resid_post.0"] + 2.0 / 32 ** 0.5)


def _greedy(model, ids, n=6):
    with torch.no_grad():
        return model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0)


def test_steering_vectors_round_trip_and_identical_edits(tiny_lm, direction):
    sv = to_steering_vector(direction)
    assert sorted(sv.layer_activations) == [1, 2]
    torch.testing.assert_close(sv.layer_activations[1].norm(), torch.tensor(1.0))
    back = from_steering_vector(sv)
    assert back.site_kind == "resid_post" and back.cosine(direction, 1) == pytest.approx(1.0, abs=1e-6)
    ids = tiny_lm.chat_ids("What is your wish?")
    with steer(tiny_lm, direction, 6.0):
        ours_logits = run_with_cache(tiny_lm, ids).logits
        ours_tokens = _greedy(tiny_lm.model, ids)
    with sv.apply(tiny_lm.model, multiplier=6.0):
        theirs_logits = run_with_cache(tiny_lm, ids).logits
        theirs_tokens = _greedy(tiny_lm.model, ids)
    _close(theirs_logits, ours_logits)
    assert torch.equal(theirs_tokens, ours_tokens)
    assert not torch.equal(ours_tokens, _greedy(tiny_lm.model, ids))  # steering changed the answer


def test_repeng_round_trip_and_identical_edits(tiny_lm, direction):
    repeng = import_repeng()
    cv = to_control_vector(direction, tiny_lm.model.config.model_type)
    assert set(cv.directions) == {1, 2} and isinstance(cv.directions[1], np.ndarray)
    back = from_control_vector(cv)
    assert back.cosine(direction, 2) == pytest.approx(1.0, abs=1e-6)
    ids = tiny_lm.chat_ids("What is your wish?")
    with steer(tiny_lm, direction, 6.0):
        ours_logits = run_with_cache(tiny_lm, ids).logits
        ours_tokens = _greedy(tiny_lm.model, ids)
    controlled = repeng.ControlModel(copy.deepcopy(tiny_lm.model), [1, 2])  # repeng mutates its model
    controlled.set_control(cv, coeff=6.0)
    with torch.no_grad():
        theirs_logits = controlled(ids).logits
    _close(theirs_logits, ours_logits)
    assert torch.equal(_greedy(controlled, ids), ours_tokens)
