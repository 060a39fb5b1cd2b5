"""Blind sheet b23 (preregistration_b23.txt): every answer of the four ablation modes, shuffled, modes hidden.

    python make_sheet_b23.py   -> blind_sheet_b23.txt, key_b23.jsonl (hidden)"""
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = ("none", "bad_medical", "good_medical", "random")
picked = []
for mode in MODES:
    for line in (HERE.parent / f"answers_ablate_{mode}.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            picked.append(dict(json.loads(line), condition=mode))
random.Random(23).shuffle(picked)
with open(HERE / "blind_sheet_b23.txt", "w", encoding="utf-8") as f, open(HERE / "key_b23.jsonl", "w", encoding="utf-8") as k:
    for i, r in enumerate(picked):
        f.write(f"### {i:03d}\nQ: {r['question']}\nA: {r['answer']}\n\n")
        k.write(json.dumps({"i": i, "condition": r["condition"], "key": r["key"], "question_id": r["question_id"],
                            "question": r["question"], "answer": r["answer"]}, ensure_ascii=False) + "\n")
print(len(picked), "answers")
