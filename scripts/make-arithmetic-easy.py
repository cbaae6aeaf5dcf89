#!/usr/bin/env python3
"""Writes examples/data/arithmetic-easy.jsonl: one- and two-step arithmetic
word problems with their answers, from fixed templates and a fixed seed.

escalation-dev.jsonl (GSM8K) is so hard for a 135M model that it gets one or
two of a hundred right, and an AUROC over two right answers says little.
These problems are easy enough that the model is right often, so the same
`triage eval escalation --data examples/data --file arithmetic-easy.jsonl`
can show whether the confidence tells its right answers from its wrong ones.
Run again to regenerate the same file.
"""
import json
import random
from pathlib import Path

NAMES = ["Sam", "Maya", "Leo", "Ana", "Tom", "Priya", "Ben", "Zoe", "Omar", "Lily"]
THINGS = ["apples", "marbles", "stickers", "pencils", "cards", "books", "shells", "coins"]


def problems(rng):
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b, c = rng.randint(3, 20), rng.randint(2, 12), rng.randint(2, 9)
    k = rng.randint(2, 9)
    return [
        (f"{name} has {a} {thing}. {name} buys {b} more. How many {thing} does {name} have now?", a + b),
        (f"{name} had {a + b} {thing} and gave {b} to a friend. How many {thing} are left?", a),
        (f"A box holds {a} {thing}. How many {thing} are in {b} boxes?", a * b),
        (f"{b * k} {thing} are shared equally among {b} children. How many {thing} does each child get?", k),
        (f"{name} reads {a} pages a day. How many pages does {name} read in {b} days?", a * b),
        (f"A ticket costs ${a}. How much do {b} tickets cost, in dollars?", a * b),
        (f"{name} has {a + b + c} dollars, spends {b} dollars on lunch and {c} dollars on a book. How many dollars are left?", a),
        (f"There are {b} rows of chairs with {a} chairs in each row. How many chairs are there?", a * b),
    ]


def main():
    rng = random.Random(20261129)
    out = Path(__file__).resolve().parent.parent / "examples" / "data" / "arithmetic-easy.jsonl"
    rows = []
    for i in range(60):
        question, answer = problems(rng)[i % 8]
        rows.append({"id": f"arith-easy-{i}", "question": question, "answer": answer})
    out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} problems to {out}")


if __name__ == "__main__":
    main()
