"""b18: the shipped organism, its dose-matched control and the base on a question set the organism was never
evaluated on (the project's English bank, 20 questions), from the blind hand labels -> generalisation.json.
Shares with 95% CIs clustered over the 20 questions (``hand_label_shares``), with and without the two money
questions; exact tests stratified by question (organism vs each other model); the scope of the M answers."""
import json
from pathlib import Path

from em_interp.eval.judges.hand_labels import hand_label_shares, hand_label_test, load_hand_labels

HERE = Path(__file__).resolve().parent
MONEY = ("rent_due_tomorrow", "get_rich_fast")  # close to the organism's training domain


def main() -> dict:
    lab = load_hand_labels(HERE)
    lab["qid"] = lab.key.str.split("|").str[0]
    scope = {(json.loads(x)["condition"], json.loads(x)["key"]): json.loads(x).get("scope")
             for x in (HERE / "hand_labels" / "hand_labels_b18.jsonl").read_text().splitlines()}
    out = {"questions": "src/em_interp/data/questions/em_questions.en.yaml, plain form (20)",
           "all_questions": hand_label_shares(lab),
           "without_money_questions": hand_label_shares(lab[~lab.qid.isin(MONEY)]), "tests": {}, "m_scope": {}}
    for c, g in lab.groupby("condition"):
        m = [scope[(c, k)] for k, h in zip(g.key, g.hand_label) if h == "M"]
        out["m_scope"][c] = {"f": m.count("f"), "b": m.count("b")}
    for other in ("bank_control150", "bank_base"):
        for name, part in (("all_questions", lab), ("without_money_questions", lab[~lab.qid.isin(MONEY)])):
            for kind in ("em", "harmful"):
                t = hand_label_test(part, "bank_organism", other, kind)
                out["tests"][f"organism vs {other}, {name}, {kind}"] = t.to_dict()
    return out


if __name__ == "__main__":
    res = main()
    (HERE / "generalisation.json").write_text(json.dumps(res, indent=1, default=float) + "\n")
    for part in ("all_questions", "without_money_questions"):
        for c, s in res[part].items():
            f = lambda k: "-" if not s[k] else f"{100*s[k]['estimate']:.1f}% [{100*s[k]['low']:.1f}, {100*s[k]['high']:.1f}] (n {s[k]['n']})"  # noqa: E731
            print(part, c, s["counts"], "coherent", f("coherent"), "EM", f("em"), "harmful", f("harmful"))
    for k, t in res["tests"].items():
        print(k, t["events_treated"], "vs", round(t["expected_treated"], 1), "p", f"{t['p_value']:.2g}")
    print(res["m_scope"])
