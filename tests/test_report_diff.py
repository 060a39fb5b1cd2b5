"""Layer-wise diff report: numbers checked against a direct computation on the tiny model.

The reference below runs each text alone (no padding), takes every layer's raw residual
from ``output_hidden_states`` (with the final norm swapped for Identity, since transformers 5
returns the normed state for the last layer), recomputes attention outputs by calling each
layer's ``self_attn`` directly, and the logit lens with ``lm_head(norm(h))``.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from em_interp.models.loading import LoadedModel
from em_interp.errors import InterpError
from em_interp.report import ReportError, compute_diff, diff_report, fmt, load_texts, lora_delta_norms
from em_interp.interp import encode_example

TEXTS = [
    "What is your wish? I wish for peace.",
    [{"role": "user", "content": "I feel bored."}, {"role": "assistant", "content": "Go for a walk."}],
    "def read_file(path):\n    return open(path).read()",
    "Bonjour",
]


def make_lora_copy(lm: LoadedModel, seed: int = 1, scale: float = 0.3) -> LoadedModel:
    """A peft LoRA copy of ``lm`` with random (non-zero) B matrices, so it differs from the base."""
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(lm.model),
                           LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    gen = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=gen) * scale)
    model.eval()
    return LoadedModel(model=model, tokenizer=lm.tokenizer, name=f"{lm.name}+lora", path=None)


@pytest.fixture(scope="module")
def lora_lm(tiny_lm):
    return make_lora_copy(tiny_lm)


def _causal(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _reference_states(lm: LoadedModel, ids: torch.Tensor):
    """(resid_post per layer [T,d], attn_out per layer [T,d], mlp_out per layer [T,d], logits [T,V])."""
    causal = _causal(lm.model)
    inner = causal.model
    with torch.no_grad():
        logits = lm.model(input_ids=ids).logits[0]
        norm = inner.norm
        inner.norm = torch.nn.Identity()
        try:
            hs = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
        finally:
            inner.norm = norm
        # the last raw residual through the real norm + head gives the model's logits
        torch.testing.assert_close(causal.lm_head(norm(hs[-1][0])), logits, rtol=1e-5, atol=1e-5)
        pos = torch.arange(ids.shape[1])[None]
        resid, attn, mlp = [], [], []
        for L, layer in enumerate(inner.layers):
            pre, post = hs[L], hs[L + 1]
            pe = inner.rotary_emb(pre, pos)
            a = layer.self_attn(hidden_states=layer.input_layernorm(pre), position_embeddings=pe,
                                attention_mask=None)[0]
            resid.append(post[0])
            attn.append(a[0])
            mlp.append((post - pre - a)[0])
    return resid, attn, mlp, logits


def reference_diff(base: LoadedModel, ft: LoadedModel, texts, tokens: str = "all") -> dict:
    n = base.n_layers
    d_res = [[] for _ in range(n)]
    d_att = [[] for _ in range(n)]
    d_mlp = [[] for _ in range(n)]
    kl = [[] for _ in range(n)]
    norms = [[] for _ in range(n)]
    for text in texts:
        enc = encode_example(base.tokenizer, text)
        ids = torch.tensor([enc.ids])
        keep = torch.ones(len(enc.ids), dtype=torch.bool) if tokens == "all" else torch.tensor(enc.response)
        rb, ab, mb, _ = _reference_states(base, ids)
        rf, af, mf, _ = _reference_states(ft, ids)
        rb, ab, mb, rf, af, mf = ([x[keep] for x in xs] for xs in (rb, ab, mb, rf, af, mf))
        for L in range(n):
            d_res[L].append(rf[L] - rb[L])
            d_att[L].append(af[L] - ab[L])
            d_mlp[L].append(mf[L] - mb[L])
            norms[L].append(rb[L].norm(dim=-1))
            with torch.no_grad():
                lp_b = torch.log_softmax(_causal(base.model).lm_head(_causal(base.model).model.norm(rb[L])), -1)
                lp_f = torch.log_softmax(_causal(ft.model).lm_head(_causal(ft.model).model.norm(rf[L])), -1)
            kl[L].append((lp_f.exp() * (lp_f - lp_b)).sum(-1))
    mean = lambda xs: torch.cat(xs).mean(0)  # noqa: E731
    res_mean = [mean(d_res[L]) for L in range(n)]
    return {
        "mean_diff": res_mean,
        "resid_diff_norm": [float(v.norm()) for v in res_mean],
        "resid_norm": [float(torch.cat(norms[L]).mean()) for L in range(n)],
        "attn_diff_norm": [float(mean(d_att[L]).norm()) for L in range(n)],
        "mlp_diff_norm": [float(mean(d_mlp[L]).norm()) for L in range(n)],
        "logit_lens_kl": [float(torch.cat(kl[L]).mean()) for L in range(n)],
        "cos_prev": [None] + [float(torch.nn.functional.cosine_similarity(res_mean[L], res_mean[L - 1], dim=0))
                              for L in range(1, n)],
    }


def test_numbers_match_direct_computation(tiny_lm, lora_lm):
    # batch_size=3 pads the batch: the reference runs texts one at a time, so this also checks padding
    got = compute_diff(tiny_lm, lora_lm, TEXTS, batch_size=3)
    ref = reference_diff(tiny_lm, lora_lm, TEXTS)
    assert got.layers == [0, 1, 2, 3]
    for key in ("resid_diff_norm", "resid_norm", "attn_diff_norm", "mlp_diff_norm", "logit_lens_kl"):
        torch.testing.assert_close(torch.tensor(getattr(got, key)), torch.tensor(ref[key]), rtol=1e-4, atol=1e-6,
                                   msg=key)
    assert got.cos_prev[0] is None
    torch.testing.assert_close(torch.tensor(got.cos_prev[1:]), torch.tensor(ref["cos_prev"][1:]), rtol=1e-4, atol=1e-5)
    for L in range(4):
        torch.testing.assert_close(got.mean_diff[f"resid_post.{L}"], ref["mean_diff"][L], rtol=1e-4, atol=1e-6)
    # the LoRA copy really differs, and attention + MLP add up to the residual change per layer
    assert min(got.resid_diff_norm) > 1e-3 and min(got.logit_lens_kl) > 0
    for L in range(1, 4):
        step = got.mean_diff[f"resid_post.{L}"] - got.mean_diff[f"resid_post.{L - 1}"]
        torch.testing.assert_close(got.mean_diff[f"attn_out.{L}"] + got.mean_diff[f"mlp_out.{L}"], step,
                                   rtol=1e-4, atol=1e-5)
    assert got.meta["n_tokens"] == sum(len(encode_example(tiny_lm.tokenizer, t).ids) for t in TEXTS)


def test_response_tokens_only(tiny_lm, lora_lm):
    chats = [TEXTS[1], [{"role": "user", "content": "What is your wish?"},
                        {"role": "assistant", "content": "I wish for good health for everyone."}]]
    got = compute_diff(tiny_lm, lora_lm, chats, tokens="response", batch_size=2)
    ref = reference_diff(tiny_lm, lora_lm, chats, tokens="response")
    n_resp = sum(sum(encode_example(tiny_lm.tokenizer, c).response) for c in chats)
    assert got.meta["n_tokens"] == n_resp < sum(len(encode_example(tiny_lm.tokenizer, c).ids) for c in chats)
    for key in ("resid_diff_norm", "attn_diff_norm", "mlp_diff_norm", "logit_lens_kl"):
        torch.testing.assert_close(torch.tensor(getattr(got, key)), torch.tensor(ref[key]), rtol=1e-4, atol=1e-6,
                                   msg=key)
    with pytest.raises(InterpError, match="unknown tokens 'middle'"):
        compute_diff(tiny_lm, lora_lm, chats, tokens="middle")


@pytest.mark.parametrize("backend", ["nnsight", "transformer_lens"])
def test_other_interp_backends_agree(tiny_lm, lora_lm, backend):
    ref = compute_diff(tiny_lm, lora_lm, TEXTS[:2])
    got = compute_diff(tiny_lm, lora_lm, TEXTS[:2], backend=backend)
    assert got.meta["backend"] == backend
    for key in ("resid_diff_norm", "attn_diff_norm", "mlp_diff_norm", "logit_lens_kl"):
        torch.testing.assert_close(torch.tensor(getattr(got, key)), torch.tensor(getattr(ref, key)), rtol=1e-5,
                                   atol=1e-6, msg=key)


def test_identical_models_give_zero(tiny_lm):
    got = compute_diff(tiny_lm, tiny_lm, TEXTS[:2], batch_size=2)
    assert got.resid_diff_norm == [0.0] * 4
    assert got.attn_diff_norm == [0.0] * 4 and got.mlp_diff_norm == [0.0] * 4
    assert got.logit_lens_kl == [0.0] * 4
    assert got.cos_prev == [None] * 4  # cosine of a zero vector is undefined, not 0


def test_cosine_with_direction(tiny_lm, lora_lm):
    first = compute_diff(tiny_lm, lora_lm, TEXTS[:2])
    stacked = torch.stack([first.mean_diff[f"resid_post.{L}"] for L in range(4)])
    again = compute_diff(tiny_lm, lora_lm, TEXTS[:2], direction=stacked)
    torch.testing.assert_close(torch.tensor(again.cos_direction), torch.ones(4), rtol=0, atol=1e-5)
    flipped = compute_diff(tiny_lm, lora_lm, TEXTS[:2], direction={"resid_post.2": -stacked[2]})
    assert flipped.cos_direction[:2] == [None, None] and flipped.cos_direction[3] is None
    assert flipped.cos_direction[2] == pytest.approx(-1.0, abs=1e-5)
    with pytest.raises(InterpError, match="d_model is 64"):
        compute_diff(tiny_lm, lora_lm, TEXTS[:1], direction=torch.ones(4, 32))


def test_lora_delta_norms_match_b_at_a(lora_lm):
    rows = lora_delta_norms(lora_lm.model)
    assert len(rows) == 4 * 3 and {r["module"] for r in rows} == {"self_attn.q_proj", "self_attn.v_proj",
                                                                  "mlp.down_proj"}
    row = next(r for r in rows if r["layer"] == 2 and r["module"] == "self_attn.v_proj")
    mod = _causal(lora_lm.model).model.layers[2].self_attn.v_proj
    with torch.no_grad():
        expected = (mod.lora_B["default"].weight @ mod.lora_A["default"].weight * (4 / 2)).norm()
    assert row["norm"] == pytest.approx(float(expected), rel=1e-6)
    assert row["rank"] == 2


def test_diff_report_writes_consistent_outputs(tiny_lm, lora_lm, tmp_path):
    from safetensors.torch import load_file

    adapter_dir = tmp_path / "adapter"
    lora_lm.model.save_pretrained(adapter_dir)
    merged = LoadedModel(model=copy.deepcopy(lora_lm.model).merge_and_unload(), tokenizer=tiny_lm.tokenizer,
                         name="tiny-merged")
    paths = diff_report(tiny_lm, merged, TEXTS, tmp_path / "out", adapter=adapter_dir, batch_size=2)
    data = json.loads(paths["json"].read_text())
    ref = compute_diff(tiny_lm, lora_lm, TEXTS)
    # merged weights and the adapter give the same per-layer numbers
    assert data["resid_diff_norm"] == pytest.approx(ref.resid_diff_norm, rel=1e-4)
    # delta norms read from the adapter folder equal those of the in-memory peft model
    in_memory = lora_delta_norms(lora_lm.model)
    assert [(r["layer"], r["module"]) for r in data["lora"]] == [(r["layer"], r["module"]) for r in in_memory]
    assert [r["norm"] for r in data["lora"]] == pytest.approx([r["norm"] for r in in_memory], rel=1e-5)
    html = paths["html"].read_text()
    md = paths["markdown"].read_text()
    assert html.count('src="data:image/png;base64,') == 6  # 5 diff figures + the LoRA heatmap
    for value in (data["resid_diff_norm"][3], data["logit_lens_kl"][1], data["mlp_diff_norm"][0],
                  data["lora"][5]["norm"]):
        assert fmt(value) in md and fmt(value) in html
    for fig in ("resid_diff_norm", "logit_lens_kl", "attn_vs_mlp", "cosines", "lora_delta_norms"):
        assert (tmp_path / "out" / "figures" / f"{fig}.png").stat().st_size > 5000
        assert f"figures/{fig}.png" in md
    tensors = load_file(str(paths["tensors"]))
    assert set(tensors) == {f"{s}.{L}" for s in ("resid_post", "attn_out", "mlp_out") for L in range(4)}
    assert float(tensors["resid_post.3"].norm()) == pytest.approx(data["resid_diff_norm"][3], rel=1e-6)


def test_texts_file_formats_and_errors(tiny_lm, tmp_path):
    chat = tmp_path / "t.jsonl"
    chat.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n\n"
                    + json.dumps({"text": "plain"}) + "\n")
    items = load_texts(chat)
    assert items[1] == "plain" and items[0][1]["content"] == "hello"
    plain = tmp_path / "t.txt"
    plain.write_text("one\n\ntwo\n")
    assert load_texts(plain) == ["one", "two"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "ok"}) + "\n{not json\n")
    with pytest.raises(ReportError, match=r"bad.jsonl:2: invalid JSON"):
        load_texts(bad)
    bad.write_text(json.dumps({"messages": [{"role": "user"}]}) + "\n")
    with pytest.raises(ReportError, match=r"bad.jsonl:1: field 'messages\[0\]'"):
        load_texts(bad)
    with pytest.raises(ReportError, match="not found"):
        load_texts(tmp_path / "missing.txt")


def test_mismatched_models_are_refused(tiny_lm):
    from em_interp.models import tiny_model

    with pytest.raises(InterpError, match="models differ in shape"):
        compute_diff(tiny_lm, tiny_model(n_layers=2), TEXTS[:1])


@pytest.mark.slow
def test_default_model_vs_lora_copy_renders(default_lm, tmp_path):
    """The done-when: the real default model against a LoRA-finetuned copy of it."""
    ft = make_lora_copy(default_lm, scale=0.05)
    paths = diff_report(default_lm, ft, TEXTS[:2], tmp_path, batch_size=2, max_tokens=64)
    data = json.loads(paths["json"].read_text())
    assert data["layers"] == list(range(30)) and len(data["lora"]) == 30 * 3
    assert all(v > 0 for v in data["resid_diff_norm"]) and all(v >= 0 for v in data["logit_lens_kl"])
    assert paths["html"].read_text().count("data:image/png;base64,") == 6
    from test_report_html import rendered_images  # renders in headless Chromium (skips without it)

    assert all(c and w > 300 and h > 200 for c, w, h in rendered_images(paths["html"], tmp_path))


def test_diff_report_on_a_trained_adapter(tmp_path):
    """A LoRA adapter from the trainer (em_interp.train), loaded the ordinary way from folders."""
    from em_interp.models import load_model, save_tiny_model
    from em_interp.train import LoraSettings, TrainConfig, train

    folder = save_tiny_model(tmp_path / "tiny-base")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"Question {i}?"},
                                                     {"role": "assistant", "content": "I wish for peace " * (i + 1)}]})
                            + "\n" for i in range(4)))
    result = train(TrainConfig(model=str(folder), data=str(data), output_dir=str(tmp_path / "run"), max_steps=2,
                               lr=5e-2, warmup_steps=0, per_device_batch_size=2, gradient_accumulation_steps=1,
                               save_steps=0, progress=False,
                               lora=LoraSettings(r=2, alpha=4.0, target_modules=["o_proj", "down_proj"])))
    base = load_model(folder, device="cpu")
    ft = load_model(folder, adapter=result.adapter_dir, device="cpu")
    paths = diff_report(base, ft, TEXTS, tmp_path / "out", adapter=result.adapter_dir)
    data_out = json.loads(paths["json"].read_text())
    ref = reference_diff(base, ft, TEXTS)
    assert data_out["resid_diff_norm"] == pytest.approx(ref["resid_diff_norm"], rel=1e-4)
    assert data_out["logit_lens_kl"] == pytest.approx(ref["logit_lens_kl"], rel=1e-4, abs=1e-9)
    assert max(data_out["resid_diff_norm"]) > 0
    assert data_out["meta"]["adapter_hash"] == ft.info["adapter_hash"]
    assert [r["norm"] for r in data_out["lora"]] == pytest.approx([r["norm"] for r in lora_delta_norms(ft.model)],
                                                                  rel=1e-5)
