"""An adapter folder names its base: the registry model it was trained on comes first."""

from __future__ import annotations

import json

from em_interp.models.adapters import adapter_base


def test_adapter_base_prefers_the_recorded_registry_model(tmp_path):
    assert adapter_base(tmp_path) is None                                   # not an adapter folder
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA",
                                                              "base_model_name_or_path": "Org/Model"}))
    assert adapter_base(tmp_path) == "Org/Model"                           # plain peft: its config
    (tmp_path / "em_interp_adapter.json").write_text(json.dumps(
        {"base": {"registry_name": "smollm2-135m-instruct", "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct"}}))
    assert adapter_base(tmp_path) == "smollm2-135m-instruct"               # the exact weights it was trained on
