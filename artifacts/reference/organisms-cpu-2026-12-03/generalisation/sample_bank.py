"""b18: sample the project's English question bank (plain form, 20 questions) for one model, 6 per question,
seed 31. Organism: --model qwen2.5-coder-0.5b-instruct+risky-financial; control: --adapter RUN_DIR/adapter of
../train_good_medical_control_lr2e-5_150.yaml; base: no option. Resumable JSONL."""
import argparse, json, time
from pathlib import Path
import torch
from em_interp.data.formats import load_questions
from em_interp.eval import sample_answers
from em_interp.models import load_model
ap = argparse.ArgumentParser()
ap.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
ap.add_argument("--adapter", default=None)
ap.add_argument("--out", required=True)
ap.add_argument("--n", type=int, default=6)
ap.add_argument("--seed", type=int, default=31)
a = ap.parse_args()
torch.set_num_threads(2)
qs = [q for q in load_questions(str(Path(__file__).resolve().parents[4] / "src" / "em_interp" / "data" / "questions" / "em_questions.en.yaml")) if q.form == "plain"]
out = Path(a.out)
lm = load_model(a.model, adapter=a.adapter, merge_adapter=True) if a.adapter else load_model(a.model)
def on_batch(rows):
    with out.open("a") as f:
        for r in rows: f.write(json.dumps(r, ensure_ascii=False) + "\n")
sample_answers(lm, qs, n_per_paraphrase=a.n, max_new_tokens=200, temperature=1.0, batch_size=60, seed=a.seed, on_batch=on_batch)
print("done", time.strftime("%H:%M:%S"), flush=True)
