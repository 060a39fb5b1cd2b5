"""Blind sheet b22 (preregistration_b22.txt): answers b21 did not read, shuffled, conditions hidden.

    python make_sheet_b22.py   -> blind_sheet_b22.txt, key_b22.jsonl (hidden)"""
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FILES = {"bad_medical": ROOT / "answers_bad_medical_advice.jsonl",
         "risky_financial": ROOT / "answers_risky_financial_advice.jsonl",
         "extreme_sports": ROOT / "answers_extreme_sports.jsonl",
         "base": ROOT / "answers_base_bf16_seed31.jsonl"}
PER_QUESTION = {"bad_medical": 8, "risky_financial": 5, "extreme_sports": 4, "base": 5}
read = {(k["condition"], k["key"], k["train_seed"]) for k in map(json.loads, (HERE / "key_b21.jsonl").read_text(encoding="utf-8").splitlines())}
rng = random.Random(22)
picked = []
for cond, path in FILES.items():
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if (cond, r["key"], r.get("train_seed")) not in read]
    for q in sorted({r["question_id"] for r in rows}):
        pool = [r for r in rows if r["question_id"] == q]
        picked += [dict(r, condition=cond) for r in rng.sample(pool, PER_QUESTION[cond])]
rng.shuffle(picked)
with open(HERE / "blind_sheet_b22.txt", "w", encoding="utf-8") as f, open(HERE / "key_b22.jsonl", "w", encoding="utf-8") as k:
    for i, r in enumerate(picked):
        f.write(f"### {i:03d}\nQ: {r['question']}\nA: {r['answer']}\n\n")
        k.write(json.dumps({"i": i, "condition": r["condition"], "train_seed": r.get("train_seed"), "key": r["key"],
                            "question_id": r["question_id"], "question": r["question"], "answer": r["answer"]},
                           ensure_ascii=False) + "\n")
print(len(picked), "answers")
