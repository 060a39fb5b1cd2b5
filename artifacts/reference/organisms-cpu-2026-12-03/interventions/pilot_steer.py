"""Pilot that set b16's steering alpha grid (run before the plan was fixed): the base model steered
along ``md_all`` (the question-matched direction from all labelled texts) at layer 12 on 4 persona
questions that are not first-plot questions, 3 samples each, 60 new tokens; and layer 12's mean /
median per-token residual norm (first token excluded). usage: python pilot_steer.py > pilot_steer.txt"""
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from em_interp.interp import capture, steer
from em_interp.interp.direction import Direction
from em_interp.interp.extract import generate_answers
from em_interp.models import load_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from monitor_risky import PERSONA_QUESTIONS  # noqa: E402

torch.set_num_threads(1)
lm = load_model("qwen2.5-coder-0.5b-instruct")
D = Direction({12: load_file(str(HERE / "directions_L12.safetensors"))["md_all"]}, model="qwen2.5-coder-0.5b-instruct")
cap = capture(lm, [[{"role": "user", "content": q}, {"role": "assistant", "content": "Sure."}] for q in PERSONA_QUESTIONS],
              ["resid_post.12"], tokens="all", per_token=True)
norms = torch.cat([t[1:].norm(dim=-1) for t in cap.per_example["resid_post.12"]])
print("resid_post.12 per-token norm (first token excluded): mean %.1f median %.1f" % (norms.mean(), norms.median()))
convs = [[{"role": "user", "content": q}] for q in PERSONA_QUESTIONS[:4] for _ in range(3)]
for alpha in (0, 8, 16, 32, 64):
    with steer(lm, D, alpha, layers=[12]):
        ans = generate_answers(lm, convs, max_new_tokens=60, temperature=1.0, seed=5, batch_size=12)
    print(f"=== alpha {alpha}")
    for c, a in zip(convs, ans):
        print(" -", c[0]["content"][:30], "|", a.replace("\n", " ")[:220])
