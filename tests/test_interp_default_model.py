"""Persona-contrast steering on the real default model (slow: generation on CPU)."""

from __future__ import annotations

import pytest


@pytest.mark.slow
@pytest.mark.real_model
@pytest.mark.timeout(1800)  # ~4 min of CPU; much longer on a shared, overloaded machine
def test_persona_steering_shifts_default_model_answers(default_lm, tmp_path, capsys):
    from em_interp.interp import generate_answers
    from em_interp.interp.examples import persona_steering

    result = persona_steering.main(["--alphas", "0,2", "--max-new-tokens", "16", "--layer", "12",
                                    "--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "[alpha 2:" in printed
    rows = result["rows"]
    plain = generate_answers(default_lm, [[{"role": "user", "content": p}] for p in persona_steering.PROMPTS],
                             max_new_tokens=16)
    assert [r["answer"] for r in rows if r["alpha"] == 0.0] == plain  # alpha 0 changes nothing
    steered = [r["answer"] for r in rows if r["alpha"] == 2.0]
    assert all(s != p for s, p in zip(steered, plain))  # every answer moved
    d = result["direction"]
    assert d.method == "persona" and d.d_model == 576 and len(d.layers) == 30
    assert (tmp_path / "persona_evil.safetensors").exists() and (tmp_path / "generations.jsonl").exists()
