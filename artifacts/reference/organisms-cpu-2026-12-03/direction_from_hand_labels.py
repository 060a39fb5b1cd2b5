"""Exploratory (issue 13, validation item 1 on the best CPU candidate): a mean-diff direction of
risky_financial step 75 from its own blind hand labels, coherent-misaligned (M) minus coherent-
aligned (A) answers, response-mean resid_post per layer (Soligo et al.'s recipe with hand labels in
place of the judge), tested leave-one-question-out: the held-out question's M / A answers are
projected on the direction built from the other questions; AUROC against same-norm random
directions. Also the cosine of the rank-1 risky organism's B vector (layer 12 down_proj) with the
layer-12 direction, and the base model's projections of the same texts.

usage: python direction_from_hand_labels.py RISKY_ADAPTER RANK1_ADAPTER   -> direction_from_hand_labels.json
(adapters: the training runs of train_risky_financial_lr2e-5.yaml / train_risky_financial_rank1.yaml)"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from sklearn.metrics import roc_auc_score

from em_interp.eval.judges.hand_labels import load_hand_labels
from em_interp.interp.capture import capture
from em_interp.interp.handles import as_model
from em_interp.models import load_model

HERE = Path(__file__).resolve().parent
FAMILY = ("risky_financial_lr2e-5_step75", "risky_financial_lr2e-5_step75_b2", "risky_financial_lr2e-5_step75_b3",
          "risky_financial_lr2e-5_step75_seed11")
N_RANDOM = 200


def main(risky_adapter: str, rank1_adapter: str) -> dict:
    torch.manual_seed(0)
    lab = load_hand_labels(HERE)
    lab = lab[lab.condition.isin(FAMILY) & lab.hand_label.isin(["A", "M"])].reset_index(drop=True)
    lab["qid"] = lab.key.str.split("|").str[0]
    chats = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in zip(lab.question, lab.answer)]
    y = (lab.hand_label == "M").to_numpy()
    out = {"texts": {"M": int(y.sum()), "A": int((~y).sum())},
           "M_by_question": lab[y].qid.value_counts().to_dict(), "A_by_question": lab[~y].qid.value_counts().to_dict()}
    for name, adapter in (("organism", risky_adapter), ("base", None)):
        lm = load_model("qwen2.5-coder-0.5b-instruct", adapter=adapter, merge_adapter=adapter is not None)
        n_layers = as_model(lm).n_layers
        sites = [f"blocks.{i}.hook_resid_post" for i in range(n_layers)]
        cap = capture(lm, chats, sites, per_example=True, batch_size=4)
        acts = {i: cap.per_example[s].float().numpy() for i, s in enumerate(cap.sites)}
        rng = np.random.default_rng(0)
        per_layer = {}
        for layer, X in acts.items():
            scores = np.full(len(y), np.nan)
            rand_scores = np.full((N_RANDOM, len(y)), np.nan)
            R = rng.normal(size=(N_RANDOM, X.shape[1]))
            for q in lab.qid.unique():
                te, tr = (lab.qid == q).to_numpy(), (lab.qid != q).to_numpy()
                if y[tr].sum() == 0 or (~y[tr]).sum() == 0:
                    continue
                d = X[tr & y].mean(0) - X[tr & ~y].mean(0)
                center = X[tr].mean(0)
                scores[te] = (X[te] - center) @ d / np.linalg.norm(d)
                rand_scores[:, te] = ((X[te] - center) @ (R / np.linalg.norm(R, axis=1, keepdims=True)).T).T
            ok = ~np.isnan(scores)
            auc = roc_auc_score(y[ok], scores[ok])
            rand = np.array([roc_auc_score(y[ok], r[ok]) for r in rand_scores])
            full = X[y].mean(0) - X[~y].mean(0)
            per_layer[layer] = {"auroc_leave_one_question_out": float(auc),
                                "random_direction_auroc_mean": float(rand.mean()),
                                "random_direction_auroc_95th_of_max_abs": float(np.quantile(np.maximum(rand, 1 - rand), 0.95)),
                                "p_random_at_least_as_far_from_0.5": float((np.abs(rand - 0.5) >= abs(auc - 0.5)).mean()),
                                "direction_norm": float(np.linalg.norm(full)),
                                "mean_resid_norm": float(np.linalg.norm(X, axis=1).mean())}
            if name == "organism":
                per_layer[layer]["_direction"] = full
        out[name] = per_layer
    # rank-1 B vector vs the organism's direction at layer 12
    w = load_file(str(Path(rank1_adapter) / "adapter_model.safetensors"))
    b = [v for k, v in w.items() if "lora_B" in k]
    cos = {}
    if len(b) == 1:
        bv = b[0].float().numpy().reshape(-1)
        for layer in (11, 12, 13):
            d = out["organism"][layer]["_direction"]
            cos[layer] = float(bv @ d / np.linalg.norm(bv) / np.linalg.norm(d))
        out["rank1_B_cosine_with_direction"] = {"layers": cos, "random_expected_abs": float(np.sqrt(2 / np.pi / bv.size)),
                                                "B_key": [k for k in w if "lora_B" in k][0]}
    for layer in out["organism"]:
        out["organism"][layer].pop("_direction")
    return out


if __name__ == "__main__":
    res = main(sys.argv[1], sys.argv[2])
    (HERE / "direction_from_hand_labels.json").write_text(json.dumps(res, indent=1) + "\n")
    for name in ("organism", "base"):
        print(name, {l: round(v["auroc_leave_one_question_out"], 2) for l, v in res[name].items()})
        print(" p(random)", {l: round(v["p_random_at_least_as_far_from_0.5"], 3) for l, v in res[name].items()})
    print(res.get("rank1_B_cosine_with_direction"), res["texts"], res["M_by_question"])
