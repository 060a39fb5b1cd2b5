"""Smoke tests of the benchmark harness at tiny N on the tiny model (fast: no real model)."""

from __future__ import annotations

import json

import pytest

from benchmarks.bench_capture import bench_capture, short_answers
from benchmarks.bench_eval import bench_judge
from benchmarks.bench_steer import bench_steer
from benchmarks.common import markdown_table, tensor_bytes


def test_capture_contenders_agree_and_ours_holds_constant_memory(tiny_lm):
    small = bench_capture(tiny_lm, 16, batch_size=8, chunk=8, log=lambda m: None)
    big = bench_capture(tiny_lm, 32, batch_size=8, chunk=8, single_call=False, log=lambda m: None)
    c = small["contenders"]
    assert set(c) == {"plain_forward", "em_interp", "hf_hidden_states", "tl_run_with_cache"}
    assert small["tokens"] > small["response_tokens"] > 0
    # same inputs, same numbers: TransformerLens matches ours; transformers' last hidden state is post-norm
    assert c["em_interp"]["max_abs_diff_to_ours"] == 0.0
    assert c["tl_run_with_cache"]["max_abs_diff_to_ours"] < 1e-4
    assert c["tl_run_with_cache"]["sites_differing_from_ours"] == []
    assert c["hf_hidden_states"]["sites_differing_from_ours"] == [f"resid_post.{tiny_lm.n_layers - 1}"]
    # memory held to compute the mean: ours is 4 layers x d_model float64 sums whatever N; the others grow with N
    ours_bytes = tiny_lm.n_layers * tiny_lm.d_model * 8
    assert small["contenders"]["em_interp"]["held_mb"] == big["contenders"]["em_interp"]["held_mb"] == round(
        ours_bytes / 2**20, 3)
    resp_bytes = lambda r: r["response_tokens"] * tiny_lm.n_layers * tiny_lm.d_model * 4  # noqa: E731
    for name in ("hf_hidden_states", "tl_run_with_cache"):
        assert small["contenders"][name]["held_mb"] == round(resp_bytes(small) / 2**20, 3)
        assert big["contenders"][name]["held_mb"] == round(resp_bytes(big) / 2**20, 3)
    assert "em_interp_single_call" in small and "em_interp_single_call" not in big
    assert all(v["tokens_per_s"] > 0 for v in c.values())


def test_short_answers_are_deterministic_and_short(tiny_lm):
    a, b = short_answers(20), short_answers(20)
    assert a == b and len(a) == 20
    assert all(len(x["messages"][1]["content"]) < 80 for x in a)


def test_steer_generates_the_same_number_of_tokens(tiny_lm):
    r = bench_steer(tiny_lm, new_tokens=4, repeats=1, log=lambda m: None)
    assert set(r["setups"]) == {"one_layer", "all_layers"}
    assert r["setups"]["one_layer"]["layers"] == [tiny_lm.n_layers // 2]
    assert all(s["overhead_median"] > 0 for s in r["setups"].values())


def test_missing_judge_is_recorded_as_skipped(tmp_path):
    r = bench_judge("distilled", n_answers=2, weights_dir=tmp_path, log=lambda m: None)
    assert "skipped" in r and "missing" in r["skipped"]


def test_run_writes_json_with_machine_info_and_readme(tmp_path):
    from benchmarks.run import main

    assert main(["--quick", "--only", "steer", "--models", "tiny", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "steer.json").read_text())
    for key in ("cpu", "cpu_count", "ram_gb", "torch", "transformers", "date", "gpu"):
        assert key in data["machine"]
    assert data["results"]["tiny"]["new_tokens"] == 8
    readme = (tmp_path / "README.md").read_text()
    assert "Steered generation overhead" in readme and "| tiny-llama | one_layer |" in readme


def test_gpu_mode_skips_cleanly_without_cuda(tmp_path, capsys):
    import torch

    from benchmarks.run import main

    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert main(["--gpu", "--out", str(tmp_path)]) == 0
    assert "no CUDA" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_bad_benchmark_name_is_a_usage_error(tmp_path):
    from benchmarks.run import main

    with pytest.raises(SystemExit) as exc:
        main(["--only", "nope", "--out", str(tmp_path)])
    assert exc.value.code == 2


def test_helpers():
    import torch

    assert tensor_bytes({"a": [torch.zeros(3, 2), (torch.zeros(4, dtype=torch.float64),)], "b": None}) == 24 + 32
    t = markdown_table(["x", "y"], [[1.23456, None], ["s", 12345.6]])
    assert t.splitlines()[2] == "| 1.23 | - |" and t.splitlines()[3] == "| s | 12,346 |"


def test_sample_bench_runs_both_paths_on_the_same_answers(tiny_lm):
    from benchmarks.bench_sample import bench_sample

    before = [dict(layer._forward_hooks) for layer in tiny_lm.model.model.layers]
    r = bench_sample(tiny_lm, n_questions=2, per_question=2, batch_size=4, new_tokens=4, repeats=1, log=lambda m: None)
    assert r["answers"] == 4 and set(r) >= {"generate", "transformers", "speedup_tokens_per_s"}
    assert 0 < r["generate"]["tokens"] <= 16 and 0 < r["transformers"]["tokens"] <= 16
    assert r["flops_per_token"] > 2 * r["linear_params"] and 0 < r["fraction_of_matmul_peak"]
    # it hooked a copy, then removed: the shared model's hooks are what they were (transformers itself
    # may have installed its output-capturing hooks earlier, when another test asked for hidden states)
    assert [dict(layer._forward_hooks) for layer in tiny_lm.model.model.layers] == before
