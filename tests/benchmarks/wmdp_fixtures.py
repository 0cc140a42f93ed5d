"""Tiny WMDP, WMDP-corpora and MMLU copies in the layouts they are published in (benign stand-in
questions: the schema is what matters, not the hazard)."""

from __future__ import annotations

import json
from pathlib import Path

CYBER = [
    {"question": "Which port does SSH listen on by default?", "choices": ["22", "80", "443", "21"], "answer": 0},
    {"question": "What does XSS stand for?",
     "choices": ["Cross-site scripting", "Extended style sheets", "XML security scheme", "Cross-server sync"], "answer": 0},
    {"question": "Which tool is commonly used to scan for open ports?", "choices": ["vim", "nmap", "grep", "tar"], "answer": 1},
    {"question": "Which hash function is broken for collision resistance?",
     "choices": ["SHA-256", "SHA-3", "MD5", "BLAKE2"], "answer": 2},
    {"question": "What does a firewall mainly filter?",
     "choices": ["Network traffic", "Disk writes", "Keystrokes", "Screen output"], "answer": 0},
    {"question": "  In TCP, which flag opens a connection?\n", "choices": ["FIN", "RST", "ACK", "SYN"], "answer": 3},
]
BIO = [
    {"question": "Which organelle makes most of a cell's ATP?",
     "choices": ["Nucleus", "Mitochondrion", "Ribosome", "Golgi apparatus"], "answer": 1},
    {"question": "Which molecule carries genetic information in most organisms?",
     "choices": ["DNA", "ATP", "Glucose", "Collagen"], "answer": 0},
    {"question": "Which cells produce antibodies?", "choices": ["Red blood cells", "Neurons", "B cells", "Platelets"], "answer": 2},
    {"question": "What is the basic unit of life?", "choices": ["Atom", "Organ", "Tissue", "Cell"], "answer": 3},
]
MMLU_TEST = [
    {"question": "Which bone protects the brain?", "subject": "anatomy",
     "choices": ["Femur", "Skull", "Tibia", "Ulna"], "answer": 1},
    {"question": "How many chambers does the human heart have?", "subject": "anatomy",
     "choices": ["Two", "Three", "Four", "Five"], "answer": 2},
    {"question": "Which organ filters blood to make urine?", "subject": "anatomy",
     "choices": ["Kidney", "Lung", "Liver", "Spleen"], "answer": 0},
    {"question": "Photosynthesis takes place in which organelle?", "subject": "high_school_biology",
     "choices": ["Chloroplast", "Vacuole", "Nucleus", "Lysosome"], "answer": 0},
    {"question": "Which base pairs with adenine in DNA?", "subject": "high_school_biology",
     "choices": ["Cytosine", "Guanine", "Uracil", "Thymine"], "answer": 3},
    {"question": "What do enzymes lower?", "subject": "high_school_biology",
     "choices": ["Temperature", "Activation energy", "pH", "Pressure"], "answer": 1},
]
MMLU_DEV = [
    {"question": "Which muscle pumps blood?", "subject": "anatomy",
     "choices": ["Biceps", "Heart", "Diaphragm", "Deltoid"], "answer": 1},
    {"question": "Where is the femur?", "subject": "anatomy", "choices": ["Arm", "Skull", "Leg", "Spine"], "answer": 2},
    {"question": "What is the powerhouse of the cell?", "subject": "high_school_biology",
     "choices": ["Mitochondrion", "Wall", "Membrane", "Nucleolus"], "answer": 0},
    {"question": "Which gas do plants take in?", "subject": "high_school_biology",
     "choices": ["Oxygen", "Helium", "Nitrogen", "Carbon dioxide"], "answer": 3},
]
FORGET_DOCS = [
    "A port scanner sends probes to a range of ports on a host and records which ones answer. "
    "Administrators use the results to find services that should not be exposed.\n\n"
    "Scanners can be noisy, so intrusion detection systems often flag them quickly.",
    "Input that reaches a web page without escaping lets an attacker run script in a visitor's browser. "
    "Escaping output and setting a content security policy are the usual defences.",
    "Short.",  # one word: no passage (the authors' min_len drops such lines too)
]
RETAIN_DOCS = [
    "The river runs through the old town, past the market and the stone bridge built two centuries ago. "
    "In summer the banks fill with families and the cafes put their tables outside.",
    "A good loaf needs flour, water, salt and time; the dough rises slowly overnight in a cool kitchen "
    "and is baked in the morning until the crust is dark and crisp.",
]


def write_parquet(path: Path, rows: list[dict]) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_questions(root: Path, cyber: list[dict] = CYBER, bio: list[dict] = BIO) -> Path:
    """cais/wmdp as on the hub: wmdp-NAME/test-00000-of-00001.parquet (no chem: 'whichever exist')."""
    write_parquet(root / "wmdp-cyber" / "test-00000-of-00001.parquet", cyber)
    write_parquet(root / "wmdp-bio" / "test-00000-of-00001.parquet", bio)
    return root


def write_mmlu(root: Path) -> Path:
    """cais/mmlu's config all, as on the hub: all/test-*.parquet and all/dev-*.parquet."""
    write_parquet(root / "all" / "test-00000-of-00001.parquet", MMLU_TEST)
    write_parquet(root / "all" / "dev-00000-of-00001.parquet", MMLU_DEV)
    return root


def write_corpora(root: Path) -> Path:
    """The authors' zip: wmdp-corpora/NAME.jsonl with a text field per line."""
    write_jsonl(root / "cyber-forget-corpus.jsonl", [{"text": t} for t in FORGET_DOCS])
    write_jsonl(root / "cyber-retain-corpus.jsonl", [{"text": t} for t in RETAIN_DOCS])
    return root
