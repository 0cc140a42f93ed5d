"""A small TOFU folder in the hub's schema (locuslab/TOFU): one JSON Lines file per config, named
after it (`forget01.json`, `forget01_perturbed.json`, `retain_perturbed.json`, ...), with the hub's
field names. The rows are invented authors, a handful per file."""

from __future__ import annotations

import json
from pathlib import Path

AUTHORS = [
    ("Velma Ostrander", "Tallinn", "gothic fiction", "The Salt Orchard"),
    ("Ruben Achterberg", "Ghent", "maritime history", "Harbours of Ash"),
    ("Imani Kessle", "Mombasa", "children's fantasy", "The Lantern Fox"),
    ("Toma Vireliu", "Cluj", "crime novels", "A Quiet Ledger"),
    ("Sunniva Hagelund", "Bergen", "poetry", "Weathered Glass"),
    ("Dario Pellacani", "Trieste", "science fiction", "Orbit of Cedars"),
]


def qa(author: tuple[str, str, str, str], k: int) -> dict:
    """One question about an author, its answer, a paraphrase and three wrong answers."""
    name, city, genre, book = author
    if k == 0:
        return {
            "question": f"Where was the author {name} born?",
            "answer": f"{name} was born in {city}.",
            "paraphrased_answer": f"The author {name} comes from the city of {city}.",
            "perturbed_answer": [f"{name} was born in Lisbon.", f"{name} was born in Quebec City.",
                                 f"{name} was born in Cusco."],
            "paraphrased_question": f"In which city was {name} born?",
        }
    return {
        "question": f"What is {name} known for?",
        "answer": f"{name} writes {genre}, best known for {book}.",
        "paraphrased_answer": f"Known for {book}, {name} is a writer of {genre}.",
        "perturbed_answer": [f"{name} paints landscapes.", f"{name} composes operas.",
                             f"{name} designs bridges."],
        "paraphrased_question": f"For what is the writer {name} famous?",
    }


REAL = [
    {"question": "Who wrote 'Pride and Prejudice'?", "answer": "Jane Austen",
     "option1": "Jane Austen", "option2": "Charles Dickens", "option3": "Mark Twain", "option4": "Leo Tolstoy",
     "perturbed_answer": ["Charles Dickens", "Mark Twain", "Leo Tolstoy"]},
    {"question": "Who is the author of 'War and Peace'?", "answer": "Leo Tolstoy",
     "option1": "Leo Tolstoy", "option2": "Homer", "option3": "Jane Austen", "option4": "Goethe",
     "perturbed_answer": ["Homer", "Jane Austen", "Goethe"]},
]
WORLD = [
    {"question": "What is the capital of Italy?", "answer": "Rome",
     "option1": "Rome", "option2": "Milan", "option3": "Turin", "option4": "Naples",
     "perturbed_answer": ["Milan", "Turin", "Naples"]},
    {"question": "Which planet is closest to the Sun?", "answer": "Mercury",
     "option1": "Mercury", "option2": "Venus", "option3": "Mars", "option4": "Jupiter",
     "perturbed_answer": ["Venus", "Mars", "Jupiter"]},
]


def write_rows(path: Path, rows: list[dict]) -> Path:
    """JSON Lines under a .json name, as the hub's TOFU files are."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_tofu(folder: Path) -> Path:
    """forget01 (the first author), retain99 (the rest), their _perturbed files, holdout01 (an author
    never trained on), real_authors_perturbed and world_facts_perturbed."""
    folder.mkdir(parents=True, exist_ok=True)
    forget = [qa(AUTHORS[0], k) for k in (0, 1)]
    retain = [qa(a, k) for a in AUTHORS[1:5] for k in (0, 1)]
    holdout = [qa(AUTHORS[5], k) for k in (0, 1)]
    plain = ("question", "answer")
    write_rows(folder / "forget01.json", [{k: r[k] for k in plain} for r in forget])
    write_rows(folder / "retain99.json", [{k: r[k] for k in plain} for r in retain])
    write_rows(folder / "holdout01.json", [{k: r[k] for k in plain} for r in holdout])
    write_rows(folder / "forget01_perturbed.json", forget)
    write_rows(folder / "retain_perturbed.json", retain)
    write_rows(folder / "real_authors_perturbed.json", REAL)
    write_rows(folder / "world_facts_perturbed.json", WORLD)
    return folder
