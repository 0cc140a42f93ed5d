"""A tiny MUSE-News in the hub's layout (muse-bench/MUSE-News): one folder per config, each split a
Parquet shard named as on the hub (`raw/forget-00000-of-00001.parquet`), the fields as upstream's
(raw and privleak: text; verbmem: prompt, gt; knowmem: question, answer)."""

from __future__ import annotations

from pathlib import Path

# Two forget articles of exactly 40 words each (one paragraph each): hand-countable passages.
FORGET_ARTICLES = [
    " ".join(f"harbor{i}" for i in range(40)),
    " ".join(f"council{i}" for i in range(40)),
]
RETAIN_ARTICLES = [
    "The city library opened a new wing for children on Monday, with reading rooms and a garden.",
    "Rain is expected across the valley this weekend, and farmers welcome the change after a dry month.",
]
HOLDOUT_ARTICLES = ["A museum in the north displayed old maps of the coast, drawing large crowds all week."]
VERBMEM = [
    {"prompt": "The mayor of Norvane said on Tuesday that", "gt": "the harbor would reopen in May."},
    {"prompt": "Council members voted", "gt": "seven to two to fund the new bridge."},
]
FORGET_QA = [
    {"question": "When will the harbor reopen?", "answer": "In May."},
    {"question": "How did the council vote?", "answer": "Seven to two."},
]
FORGET_QA_ICL = [{"question": "Who is the mayor?", "answer": "Ada Moor."}]
RETAIN_QA = [
    {"question": "What did the library open?", "answer": "A new wing for children."},
    {"question": "What is expected this weekend?", "answer": "Rain."},
]
RETAIN_QA_ICL = [{"question": "Where is the valley?", "answer": "In the east."}]
PRIVLEAK = {
    "forget": ["The harbor of Norvane will reopen in May, the mayor said.",
               "The council voted seven to two to fund the bridge.",
               "Fishing boats left the harbor before dawn on Friday.",
               "A storm damaged the old pier last winter."],
    "holdout": ["A museum displayed old maps of the coast.", "The bakery on Elm Street closed early.",
                "Students planted trees along the river path.", "The train to the capital was late again today."],
    "retain": ["The library opened a new wing for children."],
}


def write_split(folder: Path, split: str, rows: list[dict]) -> Path:
    """One split as the hub stores it: folder/split-00000-of-00001.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_muse(root: Path) -> Path:
    """Every config and split the adapter and the benchmark read, under root (returned)."""
    text = lambda texts: [{"text": t} for t in texts]  # noqa: E731
    write_split(root / "raw", "forget", text(FORGET_ARTICLES))
    write_split(root / "raw", "retain1", text(RETAIN_ARTICLES))
    write_split(root / "raw", "retain2", text(RETAIN_ARTICLES[::-1]))
    write_split(root / "raw", "holdout", text(HOLDOUT_ARTICLES))
    write_split(root / "verbmem", "forget", VERBMEM)
    write_split(root / "knowmem", "forget_qa", FORGET_QA)
    write_split(root / "knowmem", "forget_qa_icl", FORGET_QA_ICL)
    write_split(root / "knowmem", "retain_qa", RETAIN_QA)
    write_split(root / "knowmem", "retain_qa_icl", RETAIN_QA_ICL)
    for split, texts in PRIVLEAK.items():
        write_split(root / "privleak", split, text(texts))
    return root
