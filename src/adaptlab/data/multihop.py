"""A seeded fictional world for two-hop question answering (the HotPotQA stand-in of the
BetterTogether study, Soylu et al. 2024): encyclopedia pages whose facts chain, and questions
whose answers follow from the world's fact table by construction.

Entities are regions, towns, people, companies and books. Every name is made of invented
syllables and used once in the whole world (a name word never doubles as another name), so a
model cannot answer from memory and has to retrieve. A question names one entity (the subject);
its first supporting page is the subject's and states the bridge entity; its second is the
bridge's and states the answer. Templates whose answer would not be unique (a person who founded
two companies, a town that is itself the capital asked for) or whose answer already shows on the
first page or in the question are refused for that subject.
"""
from __future__ import annotations

import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import io

ONSETS = ("b", "br", "d", "dr", "f", "g", "gl", "h", "k", "kr", "l", "m", "n", "p", "pr", "r",
          "s", "sk", "st", "t", "th", "tr", "v", "w", "z")
VOWELS = ("a", "e", "i", "o", "u") * 3 + ("ae", "ai", "ei", "ou", "y")
CODAS = ("", "", "", "n", "r", "l", "s", "th", "m", "nd", "rk", "x")
# Best effort: real names the syllables could spell. Invented names are checked against these.
REAL = frozenset("""
paris rome berlin london milan lima oslo kiev delhi dublin madrid vienna prague sofia riga lisbon
boston dallas denver austin houston toronto sydney perth cairo tokyo kyoto osaka seoul hanoi manila
dakar accra lagos nairobi malta cuba peru chile china india iran iraq mali niger chad togo benin
gabon oman yemen kenya ghana nepal laos samoa tonga fiji texas ohio utah idaho maine nevada dakota
bali java crete rhine danube volga thames seine nile congo andes alps sahara gobi york bristol derby
kent devon essex bath troy sparta athens thebes verona siena parma genoa turin naples venice geneva
zurich bern basel monaco nice lyon tours nantes brest bremen bonn munich dresden leipzig hamburg
maria anna tina dora nora sara lena mona vera rosa lisa mila nina greta hugo bruno tomas mark
trevor miso loveston kevin karen brenda linda wanda
""".split())
OCCUPATIONS = ("painter", "engineer", "poet", "chemist", "merchant", "architect", "composer",
               "botanist", "cartographer", "physician", "sculptor", "astronomer")
TERRAINS = ("hilly", "coastal", "forested", "marshy", "mountainous", "upland", "lowland")
PRODUCTS = ("wool", "cheese", "glass", "pottery", "salt", "timber", "lace", "cider", "copper")
LANDMARKS = ("old bridge", "stone church", "town hall", "clock tower", "harbour wall")
INDUSTRIES = {"publishing": ("Press", "House", "Books"), "textile": ("Mills", "Weavers"),
              "shipping": ("Lines", "Shipping"), "mining": ("Mining",),
              "brewing": ("Brewery",), "instrument": ("Instruments", "Optics")}
GENRES = ("novel", "poetry collection", "travel memoir", "history", "play",
          "short story collection")
BOOK_NOUNS = ("Lanterns", "Winter", "Songs", "Ledger", "Orchards", "Tides", "Bells", "Ashes",
              "Maps", "Daughters", "Harvest", "Silence", "Ferryman", "Salt", "Towers")
SETTINGS = ("The story is set in {town}.", "It follows a family of {town}.")
# Words of the page templates: an invented name must not be one of them.
_COMMON = frozenset(re.findall(r"[a-z]+", " ".join(
    OCCUPATIONS + TERRAINS + PRODUCTS + LANDMARKS + GENRES + BOOK_NOUNS + SETTINGS).lower() + """
    is a region whose capital highest peak river rivers cross crosses it town in the of on was
    founded known for its and dates from born later studied company by headquartered though first
    workshop stood employs about people published mount press house books mills weavers lines
    shipping mining brewery instruments optics"""))
_WORD = r"(?<![\w-]){}(?![\w-])"


@dataclass
class World:
    """The fact table: one dict per entity, name -> facts, in creation order."""
    regions: dict[str, dict] = field(default_factory=dict)
    towns: dict[str, dict] = field(default_factory=dict)
    people: dict[str, dict] = field(default_factory=dict)
    companies: dict[str, dict] = field(default_factory=dict)
    books: dict[str, dict] = field(default_factory=dict)


class _Names:
    """Invented words, each handed out once."""

    def __init__(self, rng: random.Random):
        self.rng, self.used = rng, set()

    def _syllable(self, last: bool) -> str:
        coda = self.rng.choice(CODAS) if last or self.rng.random() < 0.25 else ""
        return self.rng.choice(ONSETS) + self.rng.choice(VOWELS) + coda

    def word(self, syllables: tuple[int, int] = (2, 3)) -> str:
        for _ in range(1000):
            n = syllables[0] if self.rng.random() < 0.7 else syllables[1]
            w = "".join(self._syllable(i == n - 1) for i in range(n))
            if (4 <= len(w) <= 11 and w not in self.used and w not in REAL
                    and w not in _COMMON
                    and not re.search(r"(.)\1\1", w)):
                self.used.add(w)
                return w.capitalize()
        raise RuntimeError("ran out of invented names")  # unreachable at sensible sizes


# -- the world ---------------------------------------------------------------------------------

def build_world(n_regions: int = 12, n_towns: int = 60, n_people: int = 110,
                n_companies: int = 50, n_books: int = 70, seed: int = 0) -> World:
    """The entities and their facts, deterministic in `seed`."""
    for name, v, least in (("n_regions", n_regions, 1), ("n_towns", n_towns, 2 * n_regions),
                           ("n_people", n_people, 1), ("n_companies", n_companies, 2),
                           ("n_books", n_books, 1)):
        if not isinstance(v, int) or isinstance(v, bool) or v < least:
            raise ValueError(f"{name} must be an integer of at least {least}, got {v!r}")
    rng, w = random.Random(seed), World()
    names = _Names(rng)
    _regions_and_towns(rng, names, w, n_regions, n_towns)
    towns = list(w.towns)
    for _ in range(n_people):
        birth, other = rng.sample(towns, 2)
        w.people[f"{names.word((2, 2))} {names.word()}"] = {
            "occupation": rng.choice(OCCUPATIONS), "birthplace": birth, "studied_in": other,
            "born": rng.randint(1800, 1960), "founded": []}
    _companies(rng, names, w, n_companies)
    _books(rng, names, w, n_books)
    return w


def _regions_and_towns(rng, names, w: World, n_regions: int, n_towns: int) -> None:
    for _ in range(n_regions):
        rivers = [names.word() for _ in range(rng.randint(1, 2))]
        w.regions[names.word()] = {"terrain": rng.choice(TERRAINS), "rivers": rivers,
                                   "peak": f"Mount {names.word()}", "capital": None}
    regions = list(w.regions)
    # every region gets two towns first, so that a capital question has an answer to ask about
    homes = regions * 2 + [rng.choice(regions) for _ in range(n_towns - 2 * n_regions)]
    for region in homes:
        founded = rng.randint(800, 1700)
        w.towns[names.word()] = {
            "region": region, "river": rng.choice(w.regions[region]["rivers"]),
            "founded": founded, "product": rng.choice(PRODUCTS),
            "landmark": rng.choice(LANDMARKS), "landmark_year": rng.randint(founded + 20, 1900)}
    for region, facts in w.regions.items():
        facts["capital"] = rng.choice([t for t, f in w.towns.items() if f["region"] == region])


def _companies(rng, names, w: World, n: int) -> None:
    industries = list(INDUSTRIES)
    for i in range(n):
        industry = "publishing" if i < max(1, n // 3) else rng.choice(industries[1:])
        founder = rng.choice(list(w.people))
        name = f"{names.word()} {rng.choice(INDUSTRIES[industry])}"
        w.companies[name] = {"industry": industry, "founder": founder,
                             "founded": rng.randint(1830, 1990), "headquarters":
                             rng.choice(list(w.towns)), "first_workshop": rng.choice(list(w.towns)),
                             "staff": rng.randrange(40, 9000, 10)}
        w.people[founder]["founded"].append(name)


def _books(rng, names, w: World, n: int) -> None:
    publishers = [c for c, f in w.companies.items() if f["industry"] == "publishing"]
    for _ in range(n):
        author = rng.choice(list(w.people))
        setting = rng.choice([t for t in w.towns if t != w.people[author]["birthplace"]])
        w.books[f"The {rng.choice(BOOK_NOUNS)} of {names.word()}"] = {
            "genre": rng.choice(GENRES), "author": author, "publisher": rng.choice(publishers),
            "year": rng.randint(1850, 2010), "setting": setting,
            "setting_line": rng.randrange(len(SETTINGS))}


# -- pages -------------------------------------------------------------------------------------

def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _listed(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _region_page(name: str, f: dict) -> str:
    rivers = _listed(f["rivers"])
    cross = f"the river {rivers} crosses it" if len(f["rivers"]) == 1 else \
        f"the rivers {rivers} cross it"
    return (f"{name} is {_a(f['terrain'])} region whose capital is {f['capital']}. "
            f"Its highest peak is {f['peak']}, and {cross}.")


def _town_page(name: str, f: dict) -> str:
    return (f"{name} is a town in the region of {f['region']}, on the river {f['river']}. "
            f"It was founded in {f['founded']}. It is known for its {f['product']}, and its "
            f"{f['landmark']} dates from {f['landmark_year']}.")


def _person_page(name: str, f: dict) -> str:
    surname = name.split()[-1]
    text = (f"{name} was {_a(f['occupation'])} born in {f['birthplace']} in {f['born']}. "
            f"{surname} later studied in {f['studied_in']}.")
    if f["founded"]:
        text += f" {surname} founded {_listed(f['founded'])}."
    return text


def _company_page(name: str, f: dict) -> str:
    return (f"{name} is {_a(f['industry'])} company founded by {f['founder']} in {f['founded']}. "
            f"It is headquartered in {f['headquarters']}, though its first workshop stood in "
            f"{f['first_workshop']}. It employs about {f['staff']:,} people.")


def _book_page(name: str, f: dict) -> str:
    return (f"{name} is {_a(f['genre'])} by {f['author']}, published by {f['publisher']} in "
            f"{f['year']}. " + SETTINGS[f["setting_line"]].format(town=f["setting"]))


def pages_of(w: World) -> list[dict]:
    """One page per entity: {"title", "text", "kind"}, regions first, then towns, people,
    companies, books."""
    kinds = (("region", w.regions, _region_page), ("town", w.towns, _town_page),
             ("person", w.people, _person_page), ("company", w.companies, _company_page),
             ("book", w.books, _book_page))
    return [{"title": name, "text": render(name, facts), "kind": kind}
            for kind, table, render in kinds for name, facts in table.items()]


# -- questions ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    name: str
    subjects: str
    """Which table of the world the subject comes from."""
    question: str
    hop: Callable[[World, str], str | None]
    """The bridge entity of a subject (its page is the second supporting one); None: refused."""
    answer: Callable[[World, str], str]
    """The answer, from the bridge's facts."""


def _only(items: list[str]) -> str | None:
    return items[0] if len(items) == 1 else None


TEMPLATES = (
    Template("birthplace_region", "people", "In which region is the birthplace of {s}?",
             lambda w, s: w.people[s]["birthplace"], lambda w, b: w.towns[b]["region"]),
    Template("birthplace_founded", "people", "In what year was the birthplace of {s} founded?",
             lambda w, s: w.people[s]["birthplace"], lambda w, b: str(w.towns[b]["founded"])),
    Template("birthplace_river", "people", "On which river lies the birthplace of {s}?",
             lambda w, s: w.people[s]["birthplace"], lambda w, b: w.towns[b]["river"]),
    Template("founded_company_hq", "people",
             "In which town is the company founded by {s} headquartered?",
             lambda w, s: _only(w.people[s]["founded"]),
             lambda w, b: w.companies[b]["headquarters"]),
    Template("publisher_founder", "books", "Who founded the company that published {s}?",
             lambda w, s: w.books[s]["publisher"], lambda w, b: w.companies[b]["founder"]),
    Template("publisher_founded", "books", "In what year was the publisher of {s} founded?",
             lambda w, s: w.books[s]["publisher"], lambda w, b: str(w.companies[b]["founded"])),
    Template("author_birthplace", "books", "In which town was the author of {s} born?",
             lambda w, s: w.books[s]["author"], lambda w, b: w.people[b]["birthplace"]),
    Template("headquarters_region", "companies",
             "In which region is the town where {s} has its headquarters?",
             lambda w, s: w.companies[s]["headquarters"], lambda w, b: w.towns[b]["region"]),
    Template("region_capital", "towns", "What is the capital of the region where {s} lies?",
             lambda w, s: w.towns[s]["region"], lambda w, b: w.regions[b]["capital"]),
    Template("region_peak", "towns", "What is the highest peak of the region where {s} lies?",
             lambda w, s: w.towns[s]["region"], lambda w, b: w.regions[b]["peak"]),
)


def states(text: str, phrase: str) -> bool:
    """Whether `text` mentions `phrase` as whole words (so "Vel" is not found in "Velmor")."""
    return re.search(_WORD.format(re.escape(phrase)), text) is not None


def candidates(w: World, pages: list[dict]) -> dict[str, list[dict]]:
    """Every askable question, per template, in the world's order."""
    text = {p["title"]: p["text"] for p in pages}
    out: dict[str, list[dict]] = {}
    for t in TEMPLATES:
        out[t.name] = []
        for subject in getattr(w, t.subjects):
            bridge = t.hop(w, subject)
            if bridge is None:
                continue
            answer, question = t.answer(w, bridge), t.question.format(s=subject)
            ok = (states(text[subject], bridge) and states(text[bridge], answer)
                  and not states(text[subject], answer) and not states(question, answer))
            if ok:
                out[t.name].append({"question": question, "answer": answer,
                                    "supporting": [subject, bridge], "template": t.name,
                                    "hop1_query_hint": subject, "hop2_query_hint": bridge})
    return out


def _pick(rng: random.Random, pools: dict[str, list[dict]], n: int) -> list[dict]:
    """`n` questions, drawn at random within each template and taken round-robin across them."""
    queues = [rng.sample(pool, len(pool)) for pool in pools.values()]
    total = sum(map(len, queues))
    if n > total:
        raise ValueError(f"n_questions={n}, but this world has only {total} askable questions")
    out: list[dict] = []
    while len(out) < n:
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop())
    return out


def generate(n_regions: int = 12, n_towns: int = 60, n_people: int = 110, n_companies: int = 50,
             n_books: int = 70, n_questions: int = 300, seed: int = 0
             ) -> tuple[list[dict], list[dict]]:
    """(pages, questions), deterministic in `seed`. A question is {"id", "question", "answer",
    "supporting": [subject page, bridge page], "template", "hop1_query_hint" (the subject),
    "hop2_query_hint" (the bridge)}."""
    if not isinstance(n_questions, int) or isinstance(n_questions, bool) or n_questions < 1:
        raise ValueError(f"n_questions must be a positive integer, got {n_questions!r}")
    w = build_world(n_regions, n_towns, n_people, n_companies, n_books, seed)
    pages = pages_of(w)
    picked = _pick(random.Random(f"questions-{seed}"), candidates(w, pages), n_questions)
    return pages, [{"id": f"mh-{i:04d}", **q} for i, q in enumerate(picked)]


def write(directory: str | os.PathLike, pages: list[dict], questions: list[dict]) -> Path:
    """pages.jsonl and questions.jsonl under `directory`, atomically each."""
    directory = Path(directory)
    io.write_jsonl(directory / "pages.jsonl", pages)
    io.write_jsonl(directory / "questions.jsonl", questions)
    return directory
