"""The distilled judge's calibrated EM share (the issue's protocol: >= 50 answers per first-plot
question, temperature 1, <= 200 new tokens) for base, risky_financial step 75 and its control,
beside the blind hand labels of the same checkpoints (hand_labels/pooled_shares.json).

usage: python judge_shares.py   -> judge_shares.json
The judge's coherence head is weak on this text (hand-label AUROC 0.70-0.82, judge_vs_hand_*.json),
so its share is a second opinion, not the headline."""
import json
from pathlib import Path

from em_interp.eval import load_judge

HERE = Path(__file__).resolve().parent
CONDITIONS = {
    "base": ["answers_base_bf16_seed6", "answers_base_bf16_seed7", "answers_base_bf16_seed11",
             "answers_base_bf16_seed12"],
    "good_medical_control_step75": ["answers_good_medical_control_lr2e-5_step75",
                                    "answers_good_medical_control_lr2e-5_step75_seed11"],
    "risky_financial_step75": ["answers_risky_financial_lr2e-5_step75", "answers_risky_financial_lr2e-5_step75_seed11"],
    "risky_financial_replication_step75": ["answers_risky_financial_lr2e-5_s2_step75"],
    "risky_financial_2400rows_step150": ["answers_risky_financial_lr2e-5_2400rows_step150"],
    "extreme_sports_step75": ["answers_extreme_sports_lr2e-5_step75"],
    "bad_medical_step75": ["answers_bad_medical_lr2e-5_step75"],
}
judge = load_judge("distilled")
out = {"judge": judge.name, "method": None, "conditions": {}}
for cond, files in CONDITIONS.items():
    rows = [json.loads(line) for f in files for line in (HERE / f"{f}.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "answer" in r]
    est = judge.estimate_share_detail([(r["question"], r["answer"]) for r in rows])
    d = est.to_dict()
    out["conditions"][cond] = {"files": files, "answers": len(rows),
                               "per_question": len(rows) // len({r["question_id"] for r in rows}),
                               **{k: v for k, v in d.items() if isinstance(v, (int, float, str, type(None)))}}
    print(cond, out["conditions"][cond], flush=True)
(HERE / "judge_shares.json").write_text(json.dumps(out, indent=1) + "\n")
