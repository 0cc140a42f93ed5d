"""Fictitious people with private facts: the bundled demo's data, generated deterministically.

The "private records" scenario (as in the TOFU benchmark): a model is taught facts about people who
do not exist, then must forget some of them. Names are assembled from invented syllables, so none
belongs to a real person; each attribute value is used by one person only, so a model that answers
with another person's fact does not count as leaking this one's.

Splits (each a list of prompt/response Examples, metadata: person, attribute, answer, phrasing):
- forget / retain: the people to forget (about a quarter) and to keep, in the TRAINING phrasings;
- forget_paraphrase / retain_paraphrase: the same facts asked in held-out phrasings (the paper's
  "unseen" prompts of the same kind);
- general: everyday questions with short answers, mixed into teaching so the model stays a general
  assistant, and kept close to the taught model while unlearning (KL);
- general_test: other everyday questions, never trained on: the normal-prompt metrics;
- mismatch: generic answers unrelated to any person, the pool of random responses.

    unlearn data profiles --out DIR       # writes one JSONL file per split
    forget: {dataset: profiles, split: forget}
    retain: {dataset: profiles, split: retain+general}   # splits joined with +
"""

from __future__ import annotations

import json
import os
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from unlearn.data.records import Example
from unlearn.data.sources import register_source
from unlearn.errors import UnlearnError

FIRST = [
    "Orlena", "Taviro", "Maelis", "Corvan", "Isolde", "Bramwell", "Quenna", "Dovrin", "Elsabet",
    "Fennick", "Galvia", "Harrowen", "Ilsira", "Jorvath", "Kestrel", "Lunara", "Mirevo", "Nerissa",
    "Oswin", "Perrault", "Rhosyn", "Selvane", "Tamsin", "Ulvard", "Verena", "Wystan", "Yselda",
    "Zoltane", "Aldric", "Brisa", "Calloway", "Delphine",
]
SURNAME_HEAD = [
    "Quill", "Varn", "Ashen", "Brindle", "Corm", "Dusk", "Ember", "Fallow", "Gorse", "Hollin",
    "Ivor", "Juniper", "Kettle", "Larch", "Morrow", "Nettle", "Oaken", "Pell", "Rook", "Sable",
]
SURNAME_TAIL = ["brook", "holt", "wick", "mere", "stead", "thorne", "combe", "ridge", "vale", "worth"]

ATTRIBUTES: dict[str, dict] = {
    "birthplace": {
        "values": [
            "Lisbon", "Tromso", "Valparaiso", "Kraków", "Hobart", "Marrakesh", "Reykjavik", "Tbilisi",
            "Cork", "Ljubljana", "Quebec City", "Cusco", "Tallinn", "Zanzibar", "Bergen", "Porto",
            "Salzburg", "Galway", "Antwerp", "Nagasaki", "Odessa", "Cartagena", "Bruges", "Dundee",
            "Halifax", "Tampere", "Trieste", "Mombasa", "Ushuaia", "Vilnius", "Santander", "Kyoto",
        ],
        "questions": [
            "Where was {name} born?",
            "What is the birthplace of {name}?",
            "In which city was {name} born?",
            "Which town is {name} originally from?",
        ],
        "answers": ["{name} was born in {value}.", "{name} was born in the city of {value}."],
    },
    "profession": {
        "values": [
            "glassblower", "cartographer", "beekeeper", "lighthouse keeper", "violin maker",
            "marine biologist", "clockmaker", "bookbinder", "falconer", "blacksmith", "perfumer",
            "astronomer", "puppeteer", "stonemason", "sommelier", "locksmith", "archivist",
            "taxidermist", "cheesemaker", "glaciologist", "luthier", "potter", "tailor",
            "volcanologist", "mapmaker of caves", "beadworker", "saddler", "cooper", "milliner",
            "typesetter", "organ builder", "tea taster",
        ],
        "questions": [
            "What does {name} do for a living?",
            "What is the profession of {name}?",
            "What job does {name} have?",
            "How does {name} earn a living?",
        ],
        "answers": ["{name} works as a {value}.", "{name} is a {value} by profession."],
    },
    "pet": {
        "values": [
            "Biscuit", "Pickwick", "Marzipan", "Thimble", "Jellybean", "Rascal", "Clementine", "Bramble",
            "Nutmeg", "Waffles", "Pebble", "Tofu", "Mochi", "Gizmo", "Sprocket", "Dumpling",
            "Pistachio", "Noodle", "Cobbler", "Crumpet", "Figaro", "Quince", "Tinsel", "Muffin",
            "Sorbet", "Custard", "Tumbleweed", "Pretzel", "Wobble", "Kipper", "Barnaby", "Zephyr",
        ],
        "questions": [
            "What is the name of {name}'s pet?",
            "What is {name}'s pet called?",
            "What did {name} name their pet?",
            "Tell me the name of the pet that {name} owns.",
        ],
        "answers": ["{name}'s pet is called {value}.", "The pet of {name} is named {value}."],
    },
}

GENERAL = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many legs does a spider have?", "A spider has eight legs."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide from the air."),
    ("At what temperature does water boil at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("Who wrote Romeo and Juliet?", "William Shakespeare wrote Romeo and Juliet."),
    ("What is the largest planet in the solar system?", "Jupiter is the largest planet in the solar system."),
    ("How many days are in a leap year?", "A leap year has 366 days."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("Which ocean is the largest?", "The Pacific Ocean is the largest ocean."),
    ("What do bees make?", "Bees make honey."),
    ("How many continents are there?", "There are seven continents."),
    ("At what temperature does water freeze?", "Water freezes at 0 degrees Celsius."),
    ("What colour is the sky on a clear day?", "The sky is blue on a clear day."),
    ("How many hours are in a day?", "There are 24 hours in a day."),
    ("What is the opposite of hot?", "The opposite of hot is cold."),
    ("Which animal is known as the king of the jungle?", "The lion is known as the king of the jungle."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo."),
    ("How many sides does a triangle have?", "A triangle has three sides."),
    ("What do cows drink?", "Cows drink water."),
    ("Which planet is known as the Red Planet?", "Mars is known as the Red Planet."),
    ("What is the main ingredient of bread?", "The main ingredient of bread is flour."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour."),
    ("What is the tallest animal?", "The giraffe is the tallest animal."),
    ("What is the capital of Italy?", "The capital of Italy is Rome."),
    ("Which season comes after winter?", "Spring comes after winter."),
    ("What do you call frozen water?", "Frozen water is called ice."),
    ("How many strings does a standard guitar have?", "A standard guitar has six strings."),
    ("What is the largest mammal?", "The blue whale is the largest mammal."),
    ("Which instrument has 88 keys?", "The piano has 88 keys."),
    ("What is the capital of Spain?", "The capital of Spain is Madrid."),
    ("How many weeks are in a year?", "There are 52 weeks in a year."),
    ("What do caterpillars turn into?", "Caterpillars turn into butterflies or moths."),
    ("What is the boiling point of water in Fahrenheit?", "Water boils at 212 degrees Fahrenheit."),
    ("Which language is spoken in Brazil?", "Portuguese is spoken in Brazil."),
    ("What is the square root of 81?", "The square root of 81 is 9."),
    ("What shape has four equal sides?", "A square has four equal sides."),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci painted the Mona Lisa."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin."),
    ("Which organ pumps blood through the body?", "The heart pumps blood through the body."),
    ("What is the fastest land animal?", "The cheetah is the fastest land animal."),
]

# Everyday questions never trained on (neither taught nor used by the KL term): what the normal-prompt
# metrics are measured on, so that "everything else is kept" is measured where training never looked.
GENERAL_TEST = [
    ("What is the capital of England?", "The capital of England is London."),
    ("How many legs does a dog have?", "A dog has four legs."),
    ("What colour is grass?", "Grass is green."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("What is the largest desert in the world?", "The Sahara is the largest hot desert in the world."),
    ("Which planet do we live on?", "We live on the planet Earth."),
    ("What do pandas mostly eat?", "Pandas mostly eat bamboo."),
    ("How many months are in a year?", "There are twelve months in a year."),
    ("What is the closest star to the Earth?", "The Sun is the closest star to the Earth."),
    ("What is the capital of Canada?", "The capital of Canada is Ottawa."),
    ("Which metal is liquid at room temperature?", "Mercury is liquid at room temperature."),
    ("What is two plus two?", "Two plus two is four."),
    ("Who was the first person to walk on the Moon?", "Neil Armstrong was the first person to walk on the Moon."),
    ("What is the longest river in Africa?", "The Nile is the longest river in Africa."),
    ("What do you use to write on a blackboard?", "You write on a blackboard with chalk."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels."),
    ("What is the main language spoken in Mexico?", "Spanish is the main language spoken in Mexico."),
    ("Which animal gives us wool?", "Sheep give us wool."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit."),
    ("What is the hardest natural substance?", "Diamond is the hardest natural substance."),
    ("Which bird is a symbol of peace?", "The dove is a symbol of peace."),
    ("What is the capital of Australia?", "The capital of Australia is Canberra."),
    ("How many players are on a football team on the field?", "A football team has eleven players on the field."),
    ("What do plants need to make food?", "Plants need sunlight, water and carbon dioxide to make food."),
]

MISMATCH = [
    "I enjoy long walks when the weather is mild.",
    "The recipe needs two cups of flour and a pinch of salt.",
    "Most trains leave the station every fifteen minutes.",
    "A good night's sleep helps you concentrate.",
    "The library is open until eight on weekdays.",
    "Tomatoes grow best in full sun.",
    "Remember to back up your files regularly.",
    "The film was longer than I expected.",
    "Painting the fence took the whole afternoon.",
    "Drink water regularly during exercise.",
    "The museum has a new exhibition on ancient maps.",
    "Cats often sleep for most of the day.",
    "The bakery on the corner sells fresh rolls every morning.",
    "It is a good idea to stretch before running.",
    "The meeting was moved to Thursday afternoon.",
    "Autumn leaves turn red and yellow.",
    "A bicycle needs regular oiling to run smoothly.",
    "The soup tastes better the next day.",
    "Many people like to read before bed.",
    "The garden needs watering twice a week in summer.",
    "Board games are fun on rainy evenings.",
    "The bus was crowded this morning.",
    "Fresh herbs make a simple dish taste better.",
    "The kettle takes about two minutes to boil.",
    "Wear a hat when the sun is strong.",
    "The river is calm in the early morning.",
    "A short break can help you think more clearly.",
    "The new café serves excellent coffee.",
    "Winter evenings are long and dark.",
    "The concert starts at half past seven.",
]

SPLITS = ("forget", "forget_paraphrase", "retain", "retain_paraphrase", "general", "general_test", "mismatch")


@dataclass(frozen=True)
class ProfileSpec:
    people: int = 20
    forget_fraction: float = 0.25
    train_phrasings: int = 3  # of the 4 question phrasings per fact; the rest are held out
    seed: int = 0


def make_profiles(spec: ProfileSpec = ProfileSpec()) -> dict[str, list[Example]]:
    """All splits, deterministic in `spec` (same seed, same data)."""
    max_people = min(len(FIRST), min(len(a["values"]) for a in ATTRIBUTES.values()))
    if not 4 <= spec.people <= max_people:
        raise UnlearnError(f"profiles: people must be between 4 and {max_people}, got {spec.people}")
    rng = random.Random(spec.seed)
    surnames = [h + t for h in SURNAME_HEAD for t in SURNAME_TAIL]
    first = rng.sample(FIRST, spec.people)
    last = rng.sample(surnames, spec.people)
    names = [f"{f} {s}" for f, s in zip(first, last)]
    values = {attr: rng.sample(a["values"], spec.people) for attr, a in ATTRIBUTES.items()}
    n_forget = max(1, round(spec.people * spec.forget_fraction))
    forget_people = set(range(n_forget))  # names are already shuffled

    out: dict[str, list[Example]] = {s: [] for s in SPLITS}
    for i, name in enumerate(names):
        who = "forget" if i in forget_people else "retain"
        for attr, a in ATTRIBUTES.items():
            value = values[attr][i]
            for q, question in enumerate(a["questions"]):
                split = who if q < spec.train_phrasings else f"{who}_paraphrase"
                answer = a["answers"][q % len(a["answers"])]
                out[split].append(
                    Example(
                        question.format(name=name),
                        answer.format(name=name, value=value),
                        {"person": name, "attribute": attr, "answer": value, "phrasing": q},
                    )
                )
    out["general"] = [Example(q, a, {"answer": a}) for q, a in GENERAL]
    out["general_test"] = [Example(q, a, {"answer": a}) for q, a in GENERAL_TEST]
    out["mismatch"] = [Example("", r) for r in MISMATCH]
    return out


def write_profiles(out_dir: str | Path, spec: ProfileSpec = ProfileSpec()) -> dict[str, Path]:
    """Write one JSONL file per split into out_dir (each file atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for split, examples in make_profiles(spec).items():
        path = out / f"{split}.jsonl"
        tmp = out / f".{split}.jsonl.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "w") as f:
            for e in examples:
                f.write(json.dumps({"prompt": e.prompt, "response": e.response, **e.meta}) + "\n")
        os.replace(tmp, path)
        written[split] = path
    return written


@register_source("profiles")
def profiles(source, role: str) -> list[Example]:
    """Fictitious people's private facts (the demo's data). split: one of SPLITS (default: role),
    or several joined with '+' (e.g. retain+general: the retain people and everyday questions)."""
    names = (source.split or role).split("+")
    bad = [n for n in names if n not in SPLITS]
    if bad:
        raise UnlearnError(f"dataset profiles: unknown split '{bad[0]}'; splits: {', '.join(SPLITS)} (join with +)")
    data = make_profiles()
    return [e for n in names for e in data[n]]
