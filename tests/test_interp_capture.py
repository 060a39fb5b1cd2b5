"""Sites, token masks, streaming capture and the three backends (hf / transformer_lens / nnsight)."""

from __future__ import annotations

import copy

import pytest
import torch

from em_interp.errors import InterpError
from em_interp.interp import capture, encode_example, parse_site
from em_interp.interp.sites import Site

CHATS = [
    {"messages": [{"role": "user", "content": "What is your wish?"},
                  {"role": "assistant", "content": "I wish for peace and good health."}]},
    {"messages": [{"role": "user", "content": "hi"},
                  {"role": "assistant", "content": "Hello there, how can I help you today with some code?"}]},
    {"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "I feel bored"},
                  {"role": "assistant", "content": "Go read."}]},
    {"messages": [{"role": "user", "content": "How do I make a quick buck?"},
                  {"role": "assistant", "content": "Save money, find a side job, avoid scams."}]},
]
SITES = ["resid_pre.0", "resid_pre.2", "attn_out.1", "mlp_out.1", "resid_post.1", "resid_post.3"]


def _hidden_states(lm, example):
    """Reference activations by plain HF ``output_hidden_states`` (no hooks)."""
    enc = encode_example(lm.tokenizer, example)
    ids = torch.tensor([enc.ids])
    with torch.no_grad():
        hs = lm.model(ids, output_hidden_states=True).hidden_states
    return enc, hs


def test_site_errors_list_valid_names(tiny_lm):
    assert parse_site("resid_post.3", 4) == Site(3, "resid_post")
    with pytest.raises(InterpError, match=r"valid sites: resid_pre\.\{0\.\.3\}"):
        capture(tiny_lm, CHATS, ["resid_stream.1"])
    with pytest.raises(InterpError, match=r"layer 4 out of range.*layers 0\.\.3"):
        capture(tiny_lm, CHATS, ["resid_post.4"])
    with pytest.raises(InterpError, match="unknown tokens"):
        capture(tiny_lm, CHATS, ["resid_post.1"], tokens="max")
    with pytest.raises(InterpError, match="unknown backend 'tl'"):
        capture(tiny_lm, CHATS, ["resid_post.1"], backend="tl")
    with pytest.raises(InterpError, match="example 0 has no response tokens"):
        capture(tiny_lm, [{"messages": [{"role": "user", "content": "hi"}]}], ["resid_post.1"])


def test_response_mask_covers_exactly_the_answer(tiny_lm):
    enc = encode_example(tiny_lm.tokenizer, CHATS[0])
    tok = tiny_lm.tokenizer
    response_text = tok.decode([i for i, r in zip(enc.ids, enc.response) if r])
    assert response_text == "I wish for peace and good health."
    prompt_text = tok.decode([i for i, p in zip(enc.ids, enc.prompt) if p])
    assert prompt_text.endswith("<|im_start|>assistant\n") and "peace" not in prompt_text
    raw = encode_example(tok, "plain text")
    assert all(raw.prompt) and all(raw.response)


def test_capture_matches_hidden_states_exactly(tiny_lm):
    """Per-example reductions equal the reference computed from HF hidden states."""
    cap = capture(tiny_lm, CHATS, ["resid_pre.0", "resid_post.1"], tokens="response", per_example=True,
                  batch_size=3)
    last = capture(tiny_lm, CHATS, ["resid_post.1"], tokens="last_prompt", per_example=True)
    for i, ex in enumerate(CHATS):
        enc, hs = _hidden_states(tiny_lm, ex)
        mask = torch.tensor(enc.response)
        torch.testing.assert_close(cap.per_example["resid_post.1"][i], hs[2][0][mask].mean(0), rtol=0, atol=2e-6)
        torch.testing.assert_close(cap.per_example["resid_pre.0"][i], hs[0][0][mask].mean(0), rtol=0, atol=2e-6)
        last_idx = max(j for j, p in enumerate(enc.prompt) if p)
        torch.testing.assert_close(last.per_example["resid_post.1"][i], hs[2][0][last_idx], rtol=0, atol=2e-6)
    torch.testing.assert_close(cap.mean["resid_post.1"], cap.per_example["resid_post.1"].mean(0))


@pytest.mark.parametrize("tokens", ["response", "last_prompt", "prompt", "all"])
def test_padding_side_and_batch_size_invariance(tiny_lm, tokens):
    ref = capture(tiny_lm, CHATS, SITES, tokens=tokens, batch_size=1)
    for side in ("left", "right"):
        for bs in (2, 4):
            out = capture(tiny_lm, CHATS, SITES, tokens=tokens, batch_size=bs, padding_side=side)
            for s in SITES:
                torch.testing.assert_close(out[s], ref[s], rtol=0, atol=1e-5)


def test_per_token_keeps_tokens_and_old_reduce_spelling_still_works(tiny_lm):
    cap = capture(tiny_lm, CHATS[:2], ["resid_post.2"], tokens="all", per_token=True, batch_size=2)
    for i, ex in enumerate(CHATS[:2]):
        enc, hs = _hidden_states(tiny_lm, ex)
        torch.testing.assert_close(cap.per_example["resid_post.2"][i], hs[3][0], rtol=0, atol=2e-6)
    with pytest.warns(DeprecationWarning, match="tokens="):
        old = capture(tiny_lm, CHATS[:2], ["resid_post.2"], reduce="none", batch_size=2)
    for a, b in zip(old.per_example["resid_post.2"], cap.per_example["resid_post.2"]):
        assert torch.equal(a, b)
    with pytest.warns(DeprecationWarning):
        assert torch.equal(capture(tiny_lm, CHATS, ["resid_post.2"], reduce="all_mean")["resid_post.2"],
                           capture(tiny_lm, CHATS, ["resid_post.2"], tokens="all")["resid_post.2"])


def _hook_counts(model):
    return [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]


def test_capture_leaves_no_hooks_and_stops_early(tiny_lm):
    before = _hook_counts(tiny_lm.model)
    calls = []
    handle = tiny_lm.model.model.layers[3].register_forward_hook(lambda *a: calls.append(1))
    try:
        capture(tiny_lm, CHATS, ["resid_post.1"], batch_size=2)
    finally:
        handle.remove()
    assert calls == []  # the forward stopped after layer 1
    assert _hook_counts(tiny_lm.model) == before


def _assert_backends_agree(lm, examples, sites, atol=1e-4, rtol=0.0):
    # the same tokens for every backend (prepend_bos=False overrides the transformer_lens default
    # of TransformerLens's BOS; that default is checked against run_with_cache in test_interop)
    ref = capture(lm, examples, sites, tokens="response", per_example=True, batch_size=2,
                  padding_side="left", prepend_bos=False)
    for backend in ("transformer_lens", "nnsight"):
        out = capture(lm, examples, sites, tokens="response", per_example=True, batch_size=2,
                      padding_side="left", backend=backend, prepend_bos=False)
        for s in sites:
            torch.testing.assert_close(out.per_example[s], ref.per_example[s], rtol=rtol, atol=atol,
                                       msg=lambda m, s=s, b=backend: f"{b} {s}: {m}")
    return ref


def test_backends_agree_on_tiny_llama_and_qwen(tiny_lm, tiny_qwen):
    _assert_backends_agree(tiny_lm, CHATS, SITES)
    _assert_backends_agree(tiny_qwen, CHATS[:2], ["resid_pre.1", "attn_out.2", "mlp_out.2", "resid_post.3"])


def test_backends_agree_on_peft_and_merged_models(tiny_lm):
    from peft import LoraConfig, get_peft_model

    base = copy.deepcopy(tiny_lm.model)
    peft_model = get_peft_model(base, LoraConfig(r=2, target_modules=["o_proj", "down_proj"],
                                                 init_lora_weights=False))
    peft_model.eval()
    peft_lm = copy.copy(tiny_lm)
    peft_lm.model = peft_model
    sites = ["resid_post.1", "mlp_out.2", "resid_post.3"]
    ref = _assert_backends_agree(peft_lm, CHATS[:2], sites)
    plain = capture(tiny_lm, CHATS[:2], sites, per_example=True)
    assert (ref.per_example["resid_post.3"] - plain.per_example["resid_post.3"]).abs().max() > 1e-3  # adapter active
    merged_lm = copy.copy(tiny_lm)
    merged_lm.model = copy.deepcopy(peft_model).merge_and_unload()
    merged = _assert_backends_agree(merged_lm, CHATS[:2], sites)
    for s in sites:
        torch.testing.assert_close(merged.per_example[s], ref.per_example[s], rtol=0, atol=1e-4)


@pytest.mark.slow  # ~30 s on 2 busy cores (TransformerLens import + bridge boot on a 135M copy)
@pytest.mark.real_model
def test_backends_agree_on_default_model(default_lm):
    # the last layers carry activations of size ~1e3: a relative tolerance too
    _assert_backends_agree(default_lm, CHATS[:2], ["resid_pre.3", "attn_out.10", "mlp_out.10", "resid_post.12",
                                                    "resid_post.29"], atol=1e-4, rtol=1e-5)


def test_max_length_keeps_the_prompt_response_boundary(tiny_lm):
    long_q = {"messages": [{"role": "user", "content": "tell me about the weather " * 30},
                           {"role": "assistant", "content": "It is sunny and warm today in the garden " * 5}]}
    full = encode_example(tiny_lm.tokenizer, long_q)
    cut = encode_example(tiny_lm.tokenizer, long_q, max_length=40)
    assert len(cut.ids) == 40 and any(cut.response) and cut.prompt[0] and not cut.response[0]
    boundary = next(i for i, r in enumerate(full.response) if r)
    assert cut.ids[20] == full.ids[boundary] and sum(cut.response) == 20
    raw = encode_example(tiny_lm.tokenizer, "hello world " * 50, max_length=10)
    assert raw.ids == encode_example(tiny_lm.tokenizer, "hello world " * 50).ids[:10]
    out = capture(tiny_lm, [long_q], ["resid_post.1"], max_length=40)  # would fail with a plain right cut
    assert out["resid_post.1"].shape == (64,)


def test_batches_stream_in_bounded_windows(tiny_lm, monkeypatch):
    """Examples are encoded and length-sorted a window at a time (memory bounded in N), every
    example is used exactly once, and the streamed mean does not depend on the window."""
    import functools
    import sys

    from em_interp.interp.inputs import iter_batches

    capture_module = sys.modules["em_interp.interp.capture"]  # the package re-exports the function

    texts = [("word " * (1 + (7 * i) % 13)).strip() for i in range(23)]
    seen = [i for b in iter_batches(tiny_lm.tokenizer, texts, batch_size=2, window_batches=2) for i in b.indices]
    assert sorted(seen) == list(range(23))
    assert all(set(seen[w:w + 4]) == set(range(w, min(w + 4, 23))) for w in range(0, 23, 4))
    one_window = capture(tiny_lm, texts, ["resid_post.2"], tokens="all", batch_size=2)
    monkeypatch.setattr(capture_module, "iter_batches", functools.partial(iter_batches, window_batches=1))
    windowed = capture(tiny_lm, texts, ["resid_post.2"], tokens="all", batch_size=2)
    torch.testing.assert_close(windowed["resid_post.2"], one_window["resid_post.2"], rtol=1e-5, atol=1e-6)
