"""The README's researcher quickstart runs as written (on a tiny model), so the docs cannot drift.

Every fenced ``python`` block of the README section "Researcher quickstart" is executed in
order in one namespace. The blocks read ``EM_INTERP_MODEL`` / ``EM_INTERP_ADAPTER`` /
``EM_INTERP_JUDGE``; here they point at a tiny model folder, a LoRA adapter for it and the
local judge on the same tiny model.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

# ~30 s on an idle 2-core machine; the generous timeout is for oversubscribed shared machines.
pytestmark = pytest.mark.timeout(1800)

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Researcher quickstart"


def quickstart_blocks(text: str) -> list[str]:
    """The fenced python blocks between the quickstart heading and the next ``## `` heading."""
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    body = text[start:end if end != -1 else len(text)]
    return re.findall(r"```python\n(.*?)```", body, re.S)


def test_the_readme_has_the_quickstart_blocks():
    blocks = quickstart_blocks(README.read_text(encoding="utf-8"))
    joined = "\n".join(blocks)
    assert len(blocks) >= 6
    for api in ("load_model(", "capture(", "mean_diff_direction(", "steer(", "ablate(", "train_probes(",
                "load_judge("):
        assert api in joined, f"the quickstart does not show {api}"


@pytest.fixture(scope="module")
def tiny_with_adapter(tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    from em_interp.models import load_model, save_tiny_model

    root = tmp_path_factory.mktemp("quickstart")
    folder = save_tiny_model(root / "tiny")
    peft_model = get_peft_model(load_model(folder, device="cpu").model,
                                LoraConfig(r=2, lora_alpha=4, target_modules=["o_proj", "down_proj"]))
    gen = torch.Generator().manual_seed(1)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    peft_model.save_pretrained(root / "adapter")
    return folder, root / "adapter"


def test_quickstart_runs_on_a_tiny_model(tiny_with_adapter, tmp_path, monkeypatch, capsys):
    folder, adapter = tiny_with_adapter
    monkeypatch.setenv("EM_INTERP_MODEL", str(folder))
    monkeypatch.setenv("EM_INTERP_ADAPTER", str(adapter))
    monkeypatch.setenv("EM_INTERP_JUDGE", "local")
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "quickstart"}
    for i, block in enumerate(quickstart_blocks(README.read_text(encoding="utf-8"))):
        exec(compile(block, f"README.md quickstart block {i + 1}", "exec"), ns)
    out = capsys.readouterr().out
    lm, direction = ns["lm"], ns["direction"]
    assert lm.adapter is not None and str(adapter) in str(lm.adapter)
    # the TransformerLens name and our name read the same activations; a (model, tokenizer) pair agrees
    assert ns["acts"]["blocks.1.hook_resid_post"].shape == (lm.d_model,)
    assert float((ns["same"]["blocks.1.hook_resid_post"] - ns["acts"]["blocks.1.hook_resid_post"]).abs().max()) < 1e-5
    assert sorted(direction.vectors) == [1, 2] and direction.method == "mean_diff"
    assert (tmp_path / "em_direction.safetensors").is_file() and (tmp_path / "probe_accuracy.png").is_file()
    assert [r[0] for r in ns["rows"]] == [1, 2] and all(0.0 <= r[1] <= 1.0 for r in ns["rows"])
    assert "steered:" in out and "ablated:" in out and "mean-ablated:" in out
    judged = [line.split() for line in out.splitlines()[-2:]]
    assert all(len(parts) == 3 for parts in judged)  # aligned, coherent, label per answer
