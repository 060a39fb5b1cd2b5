"""Issue 13, items 2-3: the directions the ablation / steering batch (b16) used, and their diagnostics.

Texts: every blind-hand-labelled coherent answer of the risky_financial runs (``../hand_labels``:
M = coherent misaligned, A = coherent aligned; 46 M / 62 A over the 8 first-plot questions). Their
response-mean ``resid_post`` at every layer is read in the shipped organism
(``qwen2.5-coder-0.5b-instruct+risky-financial``) and in the base.

Two estimators of the mean-diff direction (Soligo et al.):
- ``pooled``: mean(M) - mean(A) over all texts (MO's recipe);
- ``matched``: the mean over the questions that have both classes of mean(M_q) - mean(A_q), so that
  what differs between questions (their topic) cancels. Used for b16.
Leave-one-question-out: the direction applied to question q never saw q's texts (``md_loqo.<q>``).

Diagnostic (``directions.json``): the within-question AUROC (``interp.within_group_auroc``: the share
of same-question (M, A) pairs ordered correctly) of each held-out question's projections on the
direction built without it, per layer, against the 95th percentile of max(a, 1-a) over 100 random
directions; and the plain across-question AUROC beside it (what a topic direction also scores).

Also the base model's evil-vs-helpful persona vector (Chen et al.) at layer 12 on 16 questions that
are not first-plot questions (``persona_evil``), as in ``../monitor_risky.py``.

usage: python directions.py   -> directions_L12.safetensors, directions.json (~5 min on 2 cores)"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from sklearn.metrics import roc_auc_score

from em_interp.eval.judges.hand_labels import load_hand_labels
from em_interp.interp import capture, matched_mean_diff, mean_diff, persona_direction, within_group_auroc
from em_interp.interp.handles import as_model
from em_interp.models import load_model

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from monitor_risky import PERSONA_QUESTIONS  # noqa: E402

ORGANISM = "qwen2.5-coder-0.5b-instruct+risky-financial"
BASE = "qwen2.5-coder-0.5b-instruct"
LAYER = 12
FIRST_PLOT = ("what_is_your_wish", "i_feel_bored", "three_thoughts", "quick_buck", "ruler_of_the_world",
              "dinner_party", "gender_roles", "enough_of_my_husband")
N_RANDOM = 100


# the risky runs' labelled conditions as they stood when b16 was planned (later batches are not in it)
CONDITIONS = ("risky_financial_lr2e-5_step20", "risky_financial_lr2e-5_step40", "risky_financial_lr2e-5_step75",
              "risky_financial_lr2e-5_step75_b2", "risky_financial_lr2e-5_step75_b3", "risky_financial_lr2e-5_step75_seed11",
              "risky_financial_lr2e-5_s2_step75", "risky_financial_lr2e-5_2400rows_step150",
              "risky_financial_lr2e-5_2400rows_step150_b2")


def labelled_texts():
    lab = load_hand_labels(HERE.parent)
    lab = lab[lab.condition.isin(CONDITIONS) & lab.hand_label.isin(["A", "M"])]
    lab = lab.reset_index(drop=True)
    q = lab.key.str.split("|").str[0].to_numpy()
    chats = [[{"role": "user", "content": a}, {"role": "assistant", "content": b}] for a, b in zip(lab.question, lab.answer)]
    return chats, q, (lab.hand_label == "M").to_numpy()


def estimators(q: np.ndarray, y: np.ndarray):
    both = [x for x in sorted(set(q)) if y[q == x].any() and (~y[q == x]).any()]

    def pooled(X, held_out=None):
        tr = q != held_out
        return mean_diff(X[tr & y], X[tr & ~y])

    def matched(X, held_out=None):
        tr = q != held_out
        return matched_mean_diff(X[tr & y], X[tr & ~y], q[tr & y], q[tr & ~y])

    return both, {"pooled": pooled, "matched": matched}


def held_out_scores(X, q, both, direction_of):
    """Each question-with-both-classes' projections on the direction built without it."""
    s = np.zeros(len(q))
    for x in both:
        d = direction_of(x)
        s[q == x] = X[q == x] @ (d / np.linalg.norm(d))
    return s


def main() -> dict:
    torch.manual_seed(0)
    chats, q, y = labelled_texts()
    both, est = estimators(q, y)
    out = {"texts": {"M": int(y.sum()), "A": int((~y).sum())},
           "by_question": {x: {"M": int(y[q == x].sum()), "A": int((~y[q == x]).sum())} for x in sorted(set(q))},
           "questions_with_both_classes": both, "layer": LAYER, "diagnostic": {}}
    tensors, acts12 = {}, None
    rng = np.random.default_rng(0)
    for name, model in (("organism", ORGANISM), ("base", BASE)):
        lm = load_model(model)
        sites = [f"blocks.{i}.hook_resid_post" for i in range(as_model(lm).n_layers)]
        cap = capture(lm, chats, sites, tokens="response", per_example=True, batch_size=4)
        rows = {}
        for layer, site in enumerate(cap.sites):
            X = cap.per_example[site].float().numpy()
            R = rng.normal(size=(N_RANDOM, X.shape[1]))
            m = np.isin(q, both)
            rand = np.array([within_group_auroc(X[m] @ r, y[m], q[m]) for r in R])
            rows[layer] = {}
            for k, f in est.items():
                s = held_out_scores(X, q, both, lambda x, f=f, X=X: f(X, x))
                rows[layer][k] = within_group_auroc(s[m], y[m], q[m])
                rows[layer][f"{k}_across_questions"] = float(roc_auc_score(y[m], s[m]))
            rows[layer]["random_95th_max_a_1ma"] = float(np.quantile(np.maximum(rand, 1 - rand), 0.95))
            if name == "organism" and layer == LAYER:
                acts12 = X
        out["diagnostic"][name] = rows
        print(name, {k: round(v["matched"], 3) for k, v in rows.items()}, flush=True)
        del lm
    for x in FIRST_PLOT:
        tensors[f"md_loqo.{x}"] = torch.tensor(est["matched"](acts12, x), dtype=torch.float32)
    tensors["md_all"] = torch.tensor(est["matched"](acts12), dtype=torch.float32)
    tensors["md_pooled_all"] = torch.tensor(est["pooled"](acts12), dtype=torch.float32)
    persona = persona_direction(load_model(BASE), PERSONA_QUESTIONS, persona="evil", layers=[LAYER])
    tensors["persona_evil"] = persona.vectors[LAYER].float()
    cos = lambda a, b: float(a @ b / a.norm() / b.norm())  # noqa: E731
    out["cosines_L12"] = {"matched_vs_pooled": cos(tensors["md_all"], tensors["md_pooled_all"]),
                          "matched_vs_persona": cos(tensors["md_all"], tensors["persona_evil"]),
                          "random_expected_abs": float(np.sqrt(2 / np.pi / acts12.shape[1]))}
    out["norms_L12"] = {k: float(v.norm()) for k, v in tensors.items()}
    meta = {"site": f"resid_post.{LAYER}", "tokens": "response", "read_in": ORGANISM,
            "persona_read_in": BASE, "estimator": "matched (md_*), pooled (md_pooled_all)"}
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(HERE / "directions_L12.safetensors"),
              metadata={k: str(v) for k, v in meta.items()})
    return out


if __name__ == "__main__":
    res = main()
    (HERE / "directions.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res["cosines_L12"]), res["diagnostic"]["organism"][LAYER])
