"""Deterministic generator for the bundled offline demo dataset (synthetic, fictional entities).

Everything here is written by this project: passages are assembled from sentence templates
filled with invented names and seeded random numbers, and questions come from hand-written
templates in eight languages. Run ``python -m xqg.demo.data --out data/demo`` to rebuild the
committed files; the same seed always gives byte-identical output.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEV_LANGS: tuple[str, ...] = ("ar", "bn", "fi", "ja", "ko", "ru", "te")
TRAIN_LANGS: tuple[str, ...] = ("en", *DEV_LANGS)
DEV_PER_LANG = 40
HELDOUT_PER_LANG = 40  # a second question set on other passages, to tune alpha on (never dev)
N_TRAIN_PASSAGES = 250  # passages with training questions (disjoint from dev and held-out passages)
MAX_VARIANTS = 3  # near-duplicates per passage family
N_PASSAGES = 2000
N_HARD_NEGATIVES = 4
N_RANDOM_NEGATIVES = 3  # 1 positive + 7 negatives = the paper's train_n_passages 8
# The generator's pairs: every passage that is neither dev nor held-out, asked once in each training language. A
# from-scratch generator must learn to copy names it has never seen; 1,000 pairs on 500 passages taught it to
# write the question but not to copy the name. Stored as gold paragraphs (the layout DSI-QG trains on): each
# passage once with its questions, 2.6 MB where Tevatron rows with negatives would take ~38 MB.
QG_PAIRS_PER_LANG = 1

# --------------------------------------------------------------------------------------
# Invented names
# --------------------------------------------------------------------------------------

_ONSETS = (
    "b", "br", "c", "d", "dr", "f", "g", "gr", "h", "j", "k", "kr", "l", "m", "n",
    "p", "qu", "r", "s", "sh", "st", "t", "th", "tr", "v", "y", "z",
)
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ae", "ei", "ou")
_MIDDLES = ("l", "r", "n", "m", "v", "s", "d", "t", "lv", "rn", "nd", "st", "ld", "rm", "nt")
_PLACE_ENDINGS = (
    "mora", "stad", "holm", "vik", "dal", "ren", "nor", "lis", "wen", "rith", "gard",
    "tova", "ness", "ley", "mar", "zan", "dor", "bek", "mund", "sk", "thal", "vane",
)
_FIRST_ENDINGS = {
    "f": ("na", "ra", "lia", "ssa", "ne", "ya", "ka", "ria", "wen", "lle"),
    "m": ("ren", "mir", "dan", "vo", "rik", "tus", "las", "mon", "bert", "nik"),
}
_SURNAME_ENDINGS = ("ard", "vik", "sen", "hart", "wick", "dal", "mont", "quist", "ley", "ros", "ner", "gren")


class NameBank:
    """Hands out invented names that are unique and never nested inside one another."""

    MIN_LEN = 5
    MAX_DRAWS = 100_000  # rejected draws in a row before giving up

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self._used: set[str] = set()  # every name handed out, lower case
        # Every substring (of MIN_LEN chars or more) of a name handed out: a set lookup replaces a scan of all
        # earlier names, so the bank is linear in the number of names (a scan made 20,000 passages quadratic).
        self._inside: set[str] = set()

    def _word(self, endings: tuple[str, ...]) -> str:
        rng = self._rng
        parts = [rng.choice(_ONSETS), rng.choice(_VOWELS)]
        if rng.random() < 0.5:
            parts += [rng.choice(_MIDDLES), rng.choice(_VOWELS)]
        parts.append(rng.choice(endings))
        return "".join(parts).capitalize()

    def _fresh(self, endings: tuple[str, ...]) -> str:
        # Rejecting names that contain (or hide inside) an earlier name keeps every name
        # unique to one passage even under substring matching, so each question has
        # exactly one passage that can answer it. The draws are bounded: once the name space runs short (the
        # place names, somewhere between 100k and 1M passages) every draw is rejected and an unbounded loop never
        # ends, so the generator stops with an error that says so.
        for _ in range(self.MAX_DRAWS):
            word = self._word(endings)
            low = word.lower()
            if len(low) < self.MIN_LEN or low in self._inside:
                continue
            subs = {low[i:j] for i in range(len(low)) for j in range(i + self.MIN_LEN, len(low) + 1)}
            if subs.isdisjoint(self._used):
                self._used.add(low)
                self._inside |= subs
                return word
        raise RuntimeError(
            f"no new name in {self.MAX_DRAWS:,} draws after {len(self._used):,} names: the invented-name space is "
            "exhausted; generate fewer passages"
        )

    def is_name(self, value: str) -> bool:
        """Whether a fact value contains a name this bank handed out (e.g. ``Mount Velmora``)."""
        return any(word.lower() in self._used for word in value.split())

    def place(self) -> str:
        """Return a new invented place-like name, e.g. ``Velmora``."""
        return self._fresh(_PLACE_ENDINGS)

    def person(self, gender: str) -> str:
        """Return a new invented full name ``First Last`` for gender ``"f"`` or ``"m"``."""
        return f"{self._fresh(_FIRST_ENDINGS[gender])} {self._fresh(_SURNAME_ENDINGS)}"


# --------------------------------------------------------------------------------------
# Entity types: fact builders and English sentence templates
# --------------------------------------------------------------------------------------

Facts = dict[str, str]


def _num(n: int) -> str:
    return f"{n:,}"


def _years(rng: random.Random, k: int, lo: int, hi: int) -> list[str]:
    # Sorted, distinct years so events read in order and never share an answer string.
    return [str(y) for y in sorted(rng.sample(range(lo, hi + 1), k))]


def _gender(rng: random.Random) -> str:
    return rng.choice(("f", "m"))


def _town_facts(rng: random.Random, names: NameBank) -> Facts:
    (founded,) = _years(rng, 1, 1100, 1850)
    return {
        "name": names.place(),
        "region": names.place(),
        "river": names.place(),
        "founder": names.person(_gender(rng)),
        "founded": founded,
        "population": _num(rng.randrange(800, 95_000, 10)),
        "product": rng.choice((
            "copper bells", "blue wool blankets", "glass lanterns", "smoked cheeses", "clay pipes",
            "oak barrels", "paper kites", "honey cakes", "iron nails", "linen sails",
        )),
        "landmark": rng.choice((
            "a stone clock tower", "a covered market hall", "a round granary",
            "a wooden bridge with seven arches", "a red-brick cathedral", "an old salt warehouse",
        )),
    }


def _river_facts(rng: random.Random, names: NameBank) -> Facts:
    (mapped,) = _years(rng, 1, 1520, 1890)
    source = names.place()
    return {
        "name": names.place(),
        "region": names.place(),
        "source": source,
        "source_mount": f"Mount {source}",
        "sea": names.place(),
        "town": names.place(),
        "mapper": names.person(_gender(rng)),
        "mapped": mapped,
        "length": _num(rng.randint(45, 2400)),
        "tributaries": str(rng.randint(3, 39)),
        "fish": rng.choice(("silver trout", "river eels", "pike", "grayling", "freshwater mussels", "perch")),
    }


_SCIENCE_TOPICS: dict[str, tuple[str, ...]] = {
    "botanist": ("a survey of mountain mosses", "the first catalogue of salt-marsh grasses",
                 "studies of seed dispersal by wind"),
    "astronomer": ("a catalogue of variable stars", "careful measurements of comet tails",
                   "a new method for timing eclipses"),
    "chemist": ("a cheap process for purifying salt", "early work on dyes made from lichens",
                "a theory of slow combustion"),
    "geologist": ("a map of ancient lava flows", "a study of river terraces",
                  "a method for dating lake sediments"),
    "mathematician": ("a proof about prime spirals", "tables for calculating tides",
                      "a new notation for knots"),
    "marine biologist": ("a census of coastal jellyfish", "studies of eel migration",
                         "the discovery of a deep-sea shrimp"),
}


def _scientist_facts(rng: random.Random, names: NameBank) -> Facts:
    gender = _gender(rng)
    born = rng.randint(1700, 1940)
    award_year = born + rng.randint(28, 55)
    died = award_year + rng.randint(4, 30)
    field = rng.choice(sorted(_SCIENCE_TOPICS))
    return {
        "name": names.person(gender),
        "gender": gender,
        "Pron": "She" if gender == "f" else "He",
        "pron": "she" if gender == "f" else "he",
        "Poss": "Her" if gender == "f" else "His",
        "born": str(born),
        "died": str(died),
        "award_year": str(award_year),
        "birthplace": names.place(),
        "univ": names.place(),
        "award": names.place(),
        "mentor": names.person(_gender(rng)),
        "field": field,
        "topic": rng.choice(_SCIENCE_TOPICS[field]),
        "notebooks": str(rng.randint(12, 190)),
    }


def _ship_facts(rng: random.Random, names: NameBank) -> Facts:
    launched, retired = _years(rng, 2, 1780, 1975)
    return {
        "name": names.place(),
        "kind": rng.choice((
            "cargo steamer", "three-masted schooner", "research vessel", "river ferry",
            "icebreaker", "mail packet", "whaling ship",
        )),
        "launched": launched,
        "retired": retired,
        "shipyard": names.place(),
        "captain": names.person(_gender(rng)),
        "length": str(rng.randint(28, 240)),
        "crew": str(rng.randint(12, 420)),
        "port_a": names.place(),
        "port_b": names.place(),
        "fate": rng.choice((
            "was broken up for scrap", "was sunk as an artificial reef",
            "became a floating museum", "was sold to a fishing company",
        )),
    }


def _festival_facts(rng: random.Random, names: NameBank) -> Facts:
    (first_held,) = _years(rng, 1, 1600, 1990)
    feature_a, feature_b = rng.sample((
        "lantern parades", "bread baking contests", "boat races on the harbour", "fiddle competitions",
        "a night market", "a fireworks display", "poetry readings", "costume dances",
    ), 2)
    return {
        "name": names.place(),
        "town": names.place(),
        "founder": names.person(_gender(rng)),
        "first_held": first_held,
        "visitors": _num(rng.randrange(2_000, 250_000, 100)),
        "month": rng.choice(("March", "May", "June", "August", "September", "October", "December")),
        "days": str(rng.randint(2, 9)),
        "origin": rng.choice(("harvest market", "boat race", "singing contest", "cheese fair")),
        "feature_a": feature_a,
        "feature_b": feature_b,
    }


def _invention_facts(rng: random.Random, names: NameBank) -> Facts:
    (year,) = _years(rng, 1, 1750, 1990)
    kind, purpose = rng.choice((
        ("water pump", "lifting water from deep wells"),
        ("weaving loom", "weaving patterned cloth"),
        ("signal lamp", "sending messages between ships at night"),
        ("seed drill", "planting grain in straight rows"),
        ("calculating machine", "adding long columns of figures"),
        ("diving helmet", "working under water"),
        ("bread oven", "baking bread evenly"),
        ("sewing machine", "stitching heavy leather"),
    ))
    return {
        "name": names.place(),
        "kind": kind,
        "purpose": purpose,
        "year": year,
        "inventor": names.person(_gender(rng)),
        "city": names.place(),
        "museum_town": names.place(),
        "material": rng.choice(("cast iron", "brass", "oak", "bamboo", "tin", "copper", "walnut wood", "steel")),
        "units": _num(rng.randrange(300, 90_000, 10)),
    }


def _mountain_facts(rng: random.Random, names: NameBank) -> Facts:
    (ascent_year,) = _years(rng, 1, 1780, 1995)
    range_name = names.place()
    return {
        "name": names.place(),
        "range": range_name,
        "range_full": f"{range_name} Mountains",
        "height": _num(rng.randint(1_200, 7_900)),
        "ascent_year": ascent_year,
        "climber": names.person(_gender(rng)),
        "glacier": names.place(),
        "lake": names.place(),
        "village": names.place(),
        "hours": str(rng.randint(3, 14)),
    }


def _library_facts(rng: random.Random, names: NameBank) -> Facts:
    (founded,) = _years(rng, 1, 1400, 1950)
    return {
        "name": names.place(),
        "town": names.place(),
        "founder": names.person(_gender(rng)),
        "founded": founded,
        "gift": str(rng.randint(40, 900)),
        "volumes": _num(rng.randrange(8_000, 2_400_000, 100)),
        "specialty": rng.choice(("maps", "herbals", "sea charts", "music scores", "land registers")),
        "ceiling": rng.choice(("a glass dome", "a painted wooden ceiling", "a copper roof")),
        "seats": str(rng.randint(20, 300)),
    }


@dataclass(frozen=True)
class EntityType:
    """One kind of fictional entity: how to invent its facts and how to write about it."""

    name: str
    title: str  # format string over the facts
    make_facts: Callable[[random.Random, NameBank], Facts]
    # One group per sentence slot, in reading order; one alternative is picked per group.
    sentences: tuple[tuple[str, ...], ...]
    # Question key (see QUESTIONS) -> fact holding the answer string.
    answers: dict[str, str]
    # How the context sentences name the entity mid-sentence (e.g. ``the {name} Library``).
    subject: str = "{name}"


ENTITY_TYPES: tuple[EntityType, ...] = (
    EntityType(
        name="town",
        title="{name}",
        make_facts=_town_facts,
        sentences=(
            ("{name} is a market town in the {region} region, on the banks of the {river} river.",
             "{name} is a town in the {region} valley, built where the {river} river bends to the south.",
             "{name} is an old river town of {region}, lying on the {river} river."),
            ("It was founded in {founded} by the merchant {founder}.",
             "The town was established in {founded}, when {founder} built a toll bridge across the river.",
             "According to the town charter, {founder} founded the settlement in {founded}."),
            ("Its population was {population} at the last census.",
             "About {population} people live in {name} today.",
             "The most recent census counted {population} residents."),
            ("{name} is known for its {product}, which are sold across {region}.",
             "For centuries the local economy has depended on {product}."),
            ("Its best-known building is {landmark} on the old square.",
             "Visitors come mainly to see {landmark} near the river."),
        ),
        answers={"town.founded": "founded", "town.population": "population",
                 "town.founder": "founder", "town.river": "river"},
    ),
    EntityType(
        name="river",
        title="{name} (river)",
        subject="the {name} river",
        make_facts=_river_facts,
        sentences=(
            ("The {name} is a river in {region}, {length} kilometres long.",
             "The {name} river flows for {length} kilometres through the {region} lowlands."),
            ("It rises on the slopes of Mount {source} and flows into the {sea} Sea.",
             "Its source lies on Mount {source}, and its mouth opens onto the {sea} Sea."),
            ("The explorer {mapper} was the first to map its course, in {mapped}.",
             "Its course was first mapped in {mapped} by {mapper}, who travelled it by canoe."),
            ("The river is fed by {tributaries} tributaries and is rich in {fish}.",
             "It has {tributaries} tributaries, and fishermen catch {fish} along its lower course."),
            ("The largest town on its banks is {town}.",
             "{town}, the largest town on the river, grew up around an old ferry crossing."),
        ),
        answers={"river.length": "length", "river.source": "source_mount",
                 "river.mapped": "mapped", "river.mapper": "mapper"},
    ),
    EntityType(
        name="scientist",
        title="{name}",
        make_facts=_scientist_facts,
        sentences=(
            ("{name} ({born}–{died}) was a {field} born in the town of {birthplace}.",
             "{name} was a {field} born in {born} in {birthplace}."),
            ("{Pron} studied at the University of {univ} under the guidance of {mentor}.",
             "At the University of {univ}, {pron} trained as an assistant to {mentor}."),
            ("{Pron} is best remembered for {topic}.",
             "{Poss} most cited work was {topic}."),
            ("In {award_year} {pron} received the {award} Medal for this work.",
             "{Pron} was awarded the {award} Medal in {award_year}."),
            ("{Poss} {notebooks} notebooks of field notes are now kept in {birthplace}.",
             "{Pron} left {notebooks} notebooks of observations, which are still studied today."),
        ),
        answers={"scientist.born": "born", "scientist.birthplace": "birthplace",
                 "scientist.mentor": "mentor", "scientist.award_year": "award_year"},
    ),
    EntityType(
        name="ship",
        title="{name} (ship)",
        subject="the {name}",
        make_facts=_ship_facts,
        sentences=(
            ("The {name} was a {kind} launched in {launched} at the shipyard in {shipyard}.",
             "The {name} was a {kind} built at the shipyard in {shipyard} and launched in {launched}."),
            ("She was {length} metres long and carried a crew of {crew}.",
             "The ship measured {length} metres and needed a crew of {crew}."),
            ("Her first captain was {captain}.",
             "{captain}, her first captain, commanded her on the maiden voyage."),
            ("For many years she sailed between {port_a} and {port_b}.",
             "She served the route between {port_a} and {port_b} for most of her career."),
            ("She was retired in {retired} and {fate}.",
             "After she was retired in {retired}, she {fate}."),
        ),
        answers={"ship.launched": "launched", "ship.shipyard": "shipyard",
                 "ship.captain": "captain", "ship.crew": "crew"},
    ),
    EntityType(
        name="festival",
        title="{name} Festival",
        subject="the {name} Festival",
        make_facts=_festival_facts,
        sentences=(
            ("The {name} Festival is an annual celebration held each {month} in the town of {town}.",
             "The {name} Festival takes place every {month} in {town}."),
            ("It was first held in {first_held}, when {founder} organised a {origin} in the town square.",
             "The festival was started in {first_held} by {founder}, who wanted to revive an old {origin}."),
            ("Today it attracts around {visitors} visitors each year.",
             "Each year about {visitors} visitors attend."),
            ("Its best-known events are {feature_a} and {feature_b}.",
             "The programme includes {feature_a} and {feature_b}."),
            ("The celebrations last {days} days.",
             "Events run for {days} days and end with a shared meal."),
        ),
        answers={"festival.first_held": "first_held", "festival.town": "town",
                 "festival.founder": "founder", "festival.visitors": "visitors"},
    ),
    EntityType(
        name="invention",
        title="{name} ({kind})",
        subject="the {name} {kind}",
        make_facts=_invention_facts,
        sentences=(
            ("The {name} is a {kind} designed for {purpose}.",
             "The {name} was an early {kind} used for {purpose}."),
            ("It was invented in {year} by {inventor}, who built the first model in a workshop in {city}.",
             "{inventor} invented the device in {year} and built the first one in {city}."),
            ("Its frame was made of {material}.",
             "Most parts were made from {material}, which kept the price low."),
            ("About {units} units were sold before production ended.",
             "By the time production stopped, {units} units had been sold."),
            ("A working example is kept in the museum of {museum_town}.",
             "The museum in {museum_town} still shows a working example."),
        ),
        answers={"invention.inventor": "inventor", "invention.year": "year",
                 "invention.city": "city", "invention.units": "units"},
    ),
    EntityType(
        name="mountain",
        title="Mount {name}",
        subject="Mount {name}",
        make_facts=_mountain_facts,
        sentences=(
            ("Mount {name} is a peak in the {range} Mountains, {height} metres above sea level.",
             "Mount {name} rises to {height} metres and is the highest summit of the {range} Mountains."),
            ("It was first climbed in {ascent_year} by {climber}.",
             "The first ascent was made in {ascent_year} by the mountaineer {climber}."),
            ("Its northern face is covered by the {glacier} glacier.",
             "The {glacier} glacier fills the valley below its northern face."),
            ("Lake {lake} lies at the foot of its southern slope.",
             "Meltwater from the mountain feeds Lake {lake}."),
            ("The usual route starts in the village of {village} and takes {hours} hours.",
             "Climbers usually start from the village of {village}, about {hours} hours from the summit."),
        ),
        answers={"mountain.height": "height", "mountain.ascent_year": "ascent_year",
                 "mountain.climber": "climber", "mountain.range": "range_full"},
    ),
    EntityType(
        name="library",
        title="{name} Library",
        subject="the {name} Library",
        make_facts=_library_facts,
        sentences=(
            ("The {name} Library is a public library in the town of {town}.",
             "The {name} Library is the oldest library in {town}."),
            ("It was founded in {founded} by the scholar {founder}.",
             "{founder} founded the library in {founded} with a gift of {gift} books."),
            ("Today its collection holds {volumes} volumes.",
             "The library now holds {volumes} volumes, including rare {specialty}."),
            ("It is best known for its collection of old {specialty}.",
             "Scholars visit it mainly for its {specialty}."),
            ("Its reading room sits under {ceiling} and seats {seats} readers.",
             "The reading room, with {ceiling}, has {seats} seats."),
        ),
        answers={"library.founded": "founded", "library.town": "town",
                 "library.founder": "founder", "library.volumes": "volumes"},
    ),
)

# Sentences every passage ends with, about how the entity is remembered: they bring a passage to the length of
# DPR's 100-word Wikipedia passages (XOR-TyDi's corpus), so that R@2kt's 2,000 tokens hold about 20 passages, as on
# the benchmark, not 35. Only names fill them (never numbers, which could collide with another passage's answer)
# and nothing in them is asked.
CONTEXT_SENTENCES: tuple[tuple[str, ...], ...] = (
    ("A short history of {subject}, written by {historian}, was printed by a small press in {press_town}.",
     "The historian {historian} wrote the first full account of {subject}, printed in {press_town}."),
    ("The painter {painter} made a series of engravings of {subject}, now in the gallery of {gallery_town}.",
     "A series of engravings of {subject} by {painter} hangs in the gallery of {gallery_town}."),
    ("Letters and maps that mention {subject} are kept in the regional archive at {archive_town}.",
     "The regional archive at {archive_town} keeps old letters and maps that mention {subject}."),
)


def _context_facts(rng: random.Random, names: NameBank) -> Facts:
    return {
        "historian": names.person(_gender(rng)),
        "press_town": names.place(),
        "painter": names.person(_gender(rng)),
        "gallery_town": names.place(),
        "archive_town": names.place(),
    }


# --------------------------------------------------------------------------------------
# Question templates: question key -> language -> template. A template is a string, or a
# {"f": ..., "m": ...} pair where the language marks the grammatical gender of a person.
# Fictional names stay in Latin script, as they would in real cross-lingual queries.
# --------------------------------------------------------------------------------------

Template = str | dict[str, str]

QUESTIONS: dict[str, dict[str, Template]] = {
    "town.founded": {
        "en": "In what year was the town of {name} founded?",
        "ar": "في أي عام تأسست مدينة {name}؟",
        "bn": "{name} শহরটি কোন সালে প্রতিষ্ঠিত হয়েছিল?",
        "fi": "Minä vuonna {name}-niminen kaupunki perustettiin?",
        "ja": "{name}という町は何年に設立されましたか？",
        "ko": "{name} 시는 몇 년에 세워졌습니까?",
        "ru": "В каком году был основан город {name}?",
        "te": "{name} పట్టణం ఏ సంవత్సరంలో స్థాపించబడింది?",
    },
    "town.population": {
        "en": "How many people live in the town of {name}?",
        "ar": "كم يبلغ عدد سكان مدينة {name}؟",
        "bn": "{name} শহরের জনসংখ্যা কত?",
        "fi": "Kuinka monta asukasta {name}-nimisessä kaupungissa on?",
        "ja": "{name}の町の人口はどれくらいですか？",
        "ko": "{name} 시의 인구는 얼마입니까?",
        "ru": "Какова численность населения города {name}?",
        "te": "{name} పట్టణ జనాభా ఎంత?",
    },
    "town.founder": {
        "en": "Who founded the town of {name}?",
        "ar": "من أسس مدينة {name}؟",
        "bn": "{name} শহরটি কে প্রতিষ্ঠা করেছিলেন?",
        "fi": "Kuka perusti {name}-nimisen kaupungin?",
        "ja": "{name}の町を創設したのは誰ですか？",
        "ko": "{name} 시를 세운 사람은 누구입니까?",
        "ru": "Кто основал город {name}?",
        "te": "{name} పట్టణాన్ని ఎవరు స్థాపించారు?",
    },
    "town.river": {
        "en": "On which river does the town of {name} lie?",
        "ar": "على أي نهر تقع مدينة {name}؟",
        "bn": "{name} শহরটি কোন নদীর তীরে অবস্থিত?",
        "fi": "Minkä joen varrella {name}-niminen kaupunki sijaitsee?",
        "ja": "{name}の町はどの川のほとりにありますか？",
        "ko": "{name} 시는 어느 강가에 있습니까?",
        "ru": "На какой реке стоит город {name}?",
        "te": "{name} పట్టణం ఏ నది ఒడ్డున ఉంది?",
    },
    "river.length": {
        "en": "How long is the {name} river?",
        "ar": "ما طول نهر {name}؟",
        "bn": "{name} নদীর দৈর্ঘ্য কত?",
        "fi": "Kuinka pitkä {name}-joki on?",
        "ja": "{name}川の長さはどれくらいですか？",
        "ko": "{name} 강의 길이는 얼마입니까?",
        "ru": "Какова длина реки {name}?",
        "te": "{name} నది పొడవు ఎంత?",
    },
    "river.source": {
        "en": "On which mountain does the {name} river rise?",
        "ar": "من أي جبل ينبع نهر {name}؟",
        "bn": "{name} নদীর উৎস কোন পর্বতে?",
        "fi": "Miltä vuorelta {name}-joki saa alkunsa?",
        "ja": "{name}川の源流はどの山にありますか？",
        "ko": "{name} 강은 어느 산에서 발원합니까?",
        "ru": "На склонах какой горы берёт начало река {name}?",
        "te": "{name} నది ఏ పర్వతం నుండి ఉద్భవిస్తుంది?",
    },
    "river.mapped": {
        "en": "In what year was the {name} river first mapped?",
        "ar": "في أي عام رُسمت خريطة نهر {name} لأول مرة؟",
        "bn": "{name} নদীর মানচিত্র প্রথম কোন সালে তৈরি করা হয়েছিল?",
        "fi": "Minä vuonna {name}-joki kartoitettiin ensimmäisen kerran?",
        "ja": "{name}川が初めて地図に記されたのは何年ですか？",
        "ko": "{name} 강의 지도는 몇 년에 처음 만들어졌습니까?",
        "ru": "В каком году река {name} была впервые нанесена на карту?",
        "te": "{name} నది పటం మొదటిసారి ఏ సంవత్సరంలో రూపొందించబడింది?",
    },
    "river.mapper": {
        "en": "Who first mapped the {name} river?",
        "ar": "من أول من رسم خريطة نهر {name}؟",
        "bn": "{name} নদীর মানচিত্র প্রথম কে তৈরি করেছিলেন?",
        "fi": "Kuka kartoitti {name}-joen ensimmäisenä?",
        "ja": "{name}川を初めて地図に記したのは誰ですか？",
        "ko": "{name} 강의 지도를 처음 만든 사람은 누구입니까?",
        "ru": "Кто первым нанёс реку {name} на карту?",
        "te": "{name} నది పటాన్ని మొదట ఎవరు రూపొందించారు?",
    },
    "scientist.born": {
        "en": "In what year was the scientist {name} born?",
        "ar": {"f": "في أي عام وُلدت العالمة {name}؟", "m": "في أي عام وُلد العالم {name}؟"},
        "bn": "বিজ্ঞানী {name} কোন সালে জন্মগ্রহণ করেন?",
        "fi": "Minä vuonna tutkija {name} syntyi?",
        "ja": "科学者の{name}は何年に生まれましたか？",
        "ko": "{name} 박사는 몇 년에 태어났습니까?",
        "ru": {"f": "В каком году родилась учёная {name}?", "m": "В каком году родился учёный {name}?"},
        "te": "శాస్త్రవేత్త {name} ఏ సంవత్సరంలో జన్మించారు?",
    },
    "scientist.birthplace": {
        "en": "In which town was the scientist {name} born?",
        "ar": {"f": "في أي مدينة وُلدت العالمة {name}؟", "m": "في أي مدينة وُلد العالم {name}؟"},
        "bn": "বিজ্ঞানী {name} কোন শহরে জন্মগ্রহণ করেন?",
        "fi": "Missä kaupungissa tutkija {name} syntyi?",
        "ja": "科学者の{name}はどの町で生まれましたか？",
        "ko": "{name} 박사는 어느 도시에서 태어났습니까?",
        "ru": {"f": "В каком городе родилась учёная {name}?", "m": "В каком городе родился учёный {name}?"},
        "te": "శాస్త్రవేత్త {name} ఏ పట్టణంలో జన్మించారు?",
    },
    "scientist.mentor": {
        "en": "Under whose guidance did the scientist {name} study?",
        "ar": {"f": "من كان أستاذ العالمة {name}؟", "m": "من كان أستاذ العالم {name}؟"},
        "bn": "বিজ্ঞানী {name} কার কাছে পড়াশোনা করেছিলেন?",
        "fi": "Kenen johdolla tutkija {name} opiskeli?",
        "ja": "科学者の{name}の師は誰ですか？",
        "ko": "{name} 박사의 스승은 누구입니까?",
        "ru": {"f": "У кого училась учёная {name}?", "m": "У кого учился учёный {name}?"},
        "te": "శాస్త్రవేత్త {name} గురువు ఎవరు?",
    },
    "scientist.award_year": {
        "en": "In what year did the scientist {name} receive the {award} Medal?",
        "ar": {"f": "في أي عام حصلت العالمة {name} على ميدالية {award}؟",
               "m": "في أي عام حصل العالم {name} على ميدالية {award}؟"},
        "bn": "বিজ্ঞানী {name} কোন সালে {award} পদক লাভ করেন?",
        "fi": "Minä vuonna tutkija {name} sai {award}-mitalin?",
        "ja": "科学者の{name}が{award}メダルを受賞したのは何年ですか？",
        "ko": "{name} 박사는 몇 년에 {award} 메달을 받았습니까?",
        "ru": {"f": "В каком году учёная {name} получила медаль {award}?",
               "m": "В каком году учёный {name} получил медаль {award}?"},
        "te": "శాస్త్రవేత్త {name} ఏ సంవత్సరంలో {award} పతకాన్ని అందుకున్నారు?",
    },
    "ship.launched": {
        "en": "In what year was the ship {name} launched?",
        "ar": "في أي عام أُنزلت السفينة {name} إلى الماء؟",
        "bn": "{name} জাহাজটি কোন সালে জলে ভাসানো হয়েছিল?",
        "fi": "Minä vuonna {name}-laiva laskettiin vesille?",
        "ja": "{name}号は何年に進水しましたか？",
        "ko": "{name} 호는 몇 년에 진수되었습니까?",
        "ru": "В каком году было спущено на воду судно {name}?",
        "te": "{name} నౌక ఏ సంవత్సరంలో జలప్రవేశం చేసింది?",
    },
    "ship.shipyard": {
        "en": "In which town was the ship {name} built?",
        "ar": "في أي مدينة بُنيت السفينة {name}؟",
        "bn": "{name} জাহাজটি কোন শহরে তৈরি করা হয়েছিল?",
        "fi": "Missä kaupungissa {name}-laiva rakennettiin?",
        "ja": "{name}号はどの町で建造されましたか？",
        "ko": "{name} 호는 어느 도시에서 건조되었습니까?",
        "ru": "В каком городе было построено судно {name}?",
        "te": "{name} నౌకను ఏ పట్టణంలో నిర్మించారు?",
    },
    "ship.captain": {
        "en": "Who was the first captain of the ship {name}?",
        "ar": "من كان أول قبطان للسفينة {name}؟",
        "bn": "{name} জাহাজের প্রথম ক্যাপ্টেন কে ছিলেন?",
        "fi": "Kuka oli {name}-laivan ensimmäinen kapteeni?",
        "ja": "{name}号の初代船長は誰ですか？",
        "ko": "{name} 호의 초대 선장은 누구입니까?",
        "ru": "Кто был первым капитаном судна {name}?",
        "te": "{name} నౌక మొదటి కెప్టెన్ ఎవరు?",
    },
    "ship.crew": {
        "en": "How large was the crew of the ship {name}?",
        "ar": "كم كان عدد أفراد طاقم السفينة {name}؟",
        "bn": "{name} জাহাজে কতজন নাবিক ছিলেন?",
        "fi": "Kuinka monta miehistön jäsentä {name}-laivalla oli?",
        "ja": "{name}号の乗組員は何人でしたか？",
        "ko": "{name} 호의 승무원은 몇 명이었습니까?",
        "ru": "Сколько человек насчитывал экипаж судна {name}?",
        "te": "{name} నౌకలో ఎంత మంది సిబ్బంది ఉండేవారు?",
    },
    "festival.first_held": {
        "en": "When was the {name} Festival first held?",
        "ar": "متى أُقيم مهرجان {name} لأول مرة؟",
        "bn": "{name} উৎসব প্রথম কোন সালে অনুষ্ঠিত হয়েছিল?",
        "fi": "Milloin {name}-festivaali järjestettiin ensimmäisen kerran?",
        "ja": "{name}祭が初めて開催されたのは何年ですか？",
        "ko": "{name} 축제는 몇 년에 처음 열렸습니까?",
        "ru": "Когда впервые прошёл фестиваль {name}?",
        "te": "{name} ఉత్సవం మొదటిసారిగా ఏ సంవత్సరంలో జరిగింది?",
    },
    "festival.town": {
        "en": "In which town is the {name} Festival held?",
        "ar": "في أي مدينة يُقام مهرجان {name}؟",
        "bn": "{name} উৎসব কোন শহরে অনুষ্ঠিত হয়?",
        "fi": "Missä kaupungissa {name}-festivaali järjestetään?",
        "ja": "{name}祭はどの町で開催されますか？",
        "ko": "{name} 축제는 어느 도시에서 열립니까?",
        "ru": "В каком городе проходит фестиваль {name}?",
        "te": "{name} ఉత్సవం ఏ పట్టణంలో జరుగుతుంది?",
    },
    "festival.founder": {
        "en": "Who started the {name} Festival?",
        "ar": "من أسس مهرجان {name}؟",
        "bn": "{name} উৎসব কে শুরু করেছিলেন?",
        "fi": "Kuka perusti {name}-festivaalin?",
        "ja": "{name}祭を始めたのは誰ですか？",
        "ko": "{name} 축제를 처음 시작한 사람은 누구입니까?",
        "ru": "Кто основал фестиваль {name}?",
        "te": "{name} ఉత్సవాన్ని ఎవరు ప్రారంభించారు?",
    },
    "festival.visitors": {
        "en": "How many visitors does the {name} Festival attract each year?",
        "ar": "كم عدد الزوار الذين يجذبهم مهرجان {name} كل عام؟",
        "bn": "প্রতি বছর {name} উৎসবে কতজন দর্শনার্থী আসেন?",
        "fi": "Kuinka monta kävijää {name}-festivaalilla käy vuosittain?",
        "ja": "{name}祭には毎年何人が訪れますか？",
        "ko": "{name} 축제에는 매년 몇 명의 방문객이 찾아옵니까?",
        "ru": "Сколько посетителей ежегодно собирает фестиваль {name}?",
        "te": "{name} ఉత్సవానికి ప్రతి సంవత్సరం ఎంత మంది సందర్శకులు వస్తారు?",
    },
    "invention.inventor": {
        "en": "Who invented the {name}?",
        "ar": "من اخترع جهاز {name}؟",
        "bn": "{name} যন্ত্রটি কে আবিষ্কার করেছিলেন?",
        "fi": "Kuka keksi {name}-laitteen?",
        "ja": "{name}を発明したのは誰ですか？",
        "ko": "{name} 장치를 발명한 사람은 누구입니까?",
        "ru": "Кто изобрёл устройство {name}?",
        "te": "{name} యంత్రాన్ని ఎవరు కనిపెట్టారు?",
    },
    "invention.year": {
        "en": "In what year was the {name} invented?",
        "ar": "في أي عام اختُرع جهاز {name}؟",
        "bn": "{name} যন্ত্রটি কোন সালে আবিষ্কৃত হয়েছিল?",
        "fi": "Minä vuonna {name}-laite keksittiin?",
        "ja": "{name}は何年に発明されましたか？",
        "ko": "{name} 장치는 몇 년에 발명되었습니까?",
        "ru": "В каком году было изобретено устройство {name}?",
        "te": "{name} యంత్రాన్ని ఏ సంవత్సరంలో కనిపెట్టారు?",
    },
    "invention.city": {
        "en": "In which town was the first {name} built?",
        "ar": "في أي مدينة صُنع جهاز {name} لأول مرة؟",
        "bn": "{name} যন্ত্রটি প্রথম কোন শহরে তৈরি হয়েছিল?",
        "fi": "Missä kaupungissa ensimmäinen {name}-laite rakennettiin?",
        "ja": "最初の{name}はどの町で作られましたか？",
        "ko": "{name} 장치는 처음에 어느 도시에서 만들어졌습니까?",
        "ru": "В каком городе было впервые изготовлено устройство {name}?",
        "te": "{name} యంత్రాన్ని మొదట ఏ పట్టణంలో తయారు చేశారు?",
    },
    "invention.units": {
        "en": "How many units of the {name} were sold?",
        "ar": "كم وحدة بيعت من جهاز {name}؟",
        "bn": "{name} যন্ত্রের কতগুলি ইউনিট বিক্রি হয়েছিল?",
        "fi": "Kuinka monta {name}-laitetta myytiin?",
        "ja": "{name}は何台販売されましたか？",
        "ko": "{name} 장치는 몇 대가 판매되었습니까?",
        "ru": "Сколько экземпляров устройства {name} было продано?",
        "te": "{name} యంత్రాలు ఎన్ని అమ్ముడయ్యాయి?",
    },
    "mountain.height": {
        "en": "How high is Mount {name}?",
        "ar": "ما ارتفاع جبل {name}؟",
        "bn": "{name} পর্বতের উচ্চতা কত?",
        "fi": "Kuinka korkea {name}-vuori on?",
        "ja": "{name}山の標高はどれくらいですか？",
        "ko": "{name} 산의 높이는 얼마입니까?",
        "ru": "Какова высота горы {name}?",
        "te": "{name} పర్వతం ఎత్తు ఎంత?",
    },
    "mountain.ascent_year": {
        "en": "In what year was Mount {name} first climbed?",
        "ar": "في أي عام تم تسلق جبل {name} لأول مرة؟",
        "bn": "{name} পর্বতে প্রথম কোন সালে আরোহণ করা হয়েছিল?",
        "fi": "Minä vuonna {name}-vuorelle noustiin ensimmäisen kerran?",
        "ja": "{name}山の初登頂は何年ですか？",
        "ko": "{name} 산은 몇 년에 처음 등정되었습니까?",
        "ru": "В каком году было совершено первое восхождение на гору {name}?",
        "te": "{name} పర్వతాన్ని మొదటిసారిగా ఏ సంవత్సరంలో అధిరోహించారు?",
    },
    "mountain.climber": {
        "en": "Who was the first person to climb Mount {name}?",
        "ar": "من أول من تسلق جبل {name}؟",
        "bn": "{name} পর্বতে প্রথম কে আরোহণ করেছিলেন?",
        "fi": "Kuka nousi ensimmäisenä {name}-vuoren huipulle?",
        "ja": "{name}山に初めて登頂したのは誰ですか？",
        "ko": "{name} 산을 처음 등정한 사람은 누구입니까?",
        "ru": "Кто первым поднялся на гору {name}?",
        "te": "{name} పర్వతాన్ని మొదట అధిరోహించిన వ్యక్తి ఎవరు?",
    },
    "mountain.range": {
        "en": "Which mountain range is Mount {name} part of?",
        "ar": "إلى أي سلسلة جبلية ينتمي جبل {name}؟",
        "bn": "{name} পর্বত কোন পর্বতমালার অংশ?",
        "fi": "Mihin vuoristoon {name}-vuori kuuluu?",
        "ja": "{name}山はどの山脈に属していますか？",
        "ko": "{name} 산은 어느 산맥에 속해 있습니까?",
        "ru": "К какому горному хребту относится гора {name}?",
        "te": "{name} పర్వతం ఏ పర్వత శ్రేణికి చెందినది?",
    },
    "library.founded": {
        "en": "When was the {name} Library founded?",
        "ar": "متى تأسست مكتبة {name}؟",
        "bn": "{name} গ্রন্থাগার কোন সালে প্রতিষ্ঠিত হয়েছিল?",
        "fi": "Minä vuonna {name}-kirjasto perustettiin?",
        "ja": "{name}図書館は何年に設立されましたか？",
        "ko": "{name} 도서관은 몇 년에 설립되었습니까?",
        "ru": "В каком году была основана библиотека {name}?",
        "te": "{name} గ్రంథాలయం ఏ సంవత్సరంలో స్థాపించబడింది?",
    },
    "library.town": {
        "en": "In which town is the {name} Library located?",
        "ar": "في أي مدينة تقع مكتبة {name}؟",
        "bn": "{name} গ্রন্থাগারটি কোন শহরে অবস্থিত?",
        "fi": "Missä kaupungissa {name}-kirjasto sijaitsee?",
        "ja": "{name}図書館はどの町にありますか？",
        "ko": "{name} 도서관은 어느 도시에 있습니까?",
        "ru": "В каком городе находится библиотека {name}?",
        "te": "{name} గ్రంథాలయం ఏ పట్టణంలో ఉంది?",
    },
    "library.founder": {
        "en": "Who founded the {name} Library?",
        "ar": "من أسس مكتبة {name}؟",
        "bn": "{name} গ্রন্থাগারটি কে প্রতিষ্ঠা করেছিলেন?",
        "fi": "Kuka perusti {name}-kirjaston?",
        "ja": "{name}図書館を創設したのは誰ですか？",
        "ko": "{name} 도서관을 설립한 사람은 누구입니까?",
        "ru": "Кто основал библиотеку {name}?",
        "te": "{name} గ్రంథాలయాన్ని ఎవరు స్థాపించారు?",
    },
    "library.volumes": {
        "en": "How many volumes does the {name} Library hold?",
        "ar": "كم مجلدًا تضم مكتبة {name}؟",
        "bn": "{name} গ্রন্থাগারে কতগুলি বই আছে?",
        "fi": "Kuinka monta nidettä {name}-kirjastossa on?",
        "ja": "{name}図書館の蔵書数はどれくらいですか？",
        "ko": "{name} 도서관의 장서는 몇 권입니까?",
        "ru": "Сколько томов хранится в библиотеке {name}?",
        "te": "{name} గ్రంథాలయంలో ఎన్ని పుస్తకాలు ఉన్నాయి?",
    },
}

# --------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Passage:
    """One generated corpus passage plus the facts it was written from."""

    docid: str
    etype: EntityType
    title: str
    text: str
    facts: Facts
    choices: tuple[int, ...]  # the sentence alternative picked in each slot

    def record(self) -> dict[str, str]:
        """Return the passage as a ``{"docid", "title", "text"}`` corpus record."""
        return {"docid": self.docid, "title": self.title, "text": self.text}


def _ambiguous_numbers(etype: EntityType, facts: Facts) -> bool:
    # A numeric answer hidden inside another fact (crew "12" inside length "120", or equal
    # to it) would make the answer span ambiguous within its own passage.
    for slot in etype.answers.values():
        value = facts[slot]
        if value.replace(",", "").isdigit() and any(
            value in other for key, other in facts.items() if key != slot
        ):
            return True
    return False


def _is_number(value: str) -> bool:
    return value.replace(",", "").isdigit()


def _make_passage(
    docid: str, etype: EntityType, rng: random.Random, names: NameBank, like: Passage | None = None
) -> Passage:
    """A passage with fresh facts; ``like`` makes it a near-duplicate of that passage.

    A near-duplicate keeps its model's sentences and every fact that is neither a name nor a number (product,
    landmark, field, ...), so the two differ only in names and numbers: the retriever must match the name.
    """
    while True:
        facts = etype.make_facts(rng, names) | _context_facts(rng, names)
        if like is not None:
            facts.update({k: v for k, v in like.facts.items() if not (_is_number(v) or names.is_name(v))})
        # Redrawing all facts keeps the builders trivial; rejected names simply stay
        # reserved in the bank, which only costs a few unused names.
        if not _ambiguous_numbers(etype, facts):
            break
    facts["subject"] = etype.subject.format(**facts)
    groups = etype.sentences + CONTEXT_SENTENCES
    choices = like.choices if like is not None else tuple(rng.randrange(len(group)) for group in groups)
    text = " ".join(group[c].format(**facts) for group, c in zip(groups, choices))
    passage = Passage(docid=docid, etype=etype, title=etype.title.format(**facts), text=text, facts=facts,
                      choices=choices)
    for key in etype.answers:
        if _answer(passage, key) not in text:
            raise AssertionError(f"{docid}: answer for {key} missing from text")
    return passage


def _answer(passage: Passage, key: str) -> str:
    return passage.facts[passage.etype.answers[key]]


def _question(passage: Passage, key: str, lang: str) -> str:
    template = QUESTIONS[key][lang]
    if isinstance(template, dict):
        template = template[passage.facts["gender"]]
    return template.format(**passage.facts)


def make_passages(n_passages: int, rng: random.Random) -> list[Passage]:
    """Generate ``n_passages`` passages in families: one passage and up to MAX_VARIANTS near-duplicates of it.

    Families cycle through the entity types. Linear in ``n_passages`` (20,000 take seconds).
    """
    names = NameBank(rng)
    passages: list[Passage] = []
    families = 0
    while len(passages) < n_passages:
        etype = ENTITY_TYPES[families % len(ENTITY_TYPES)]
        families += 1
        first = _make_passage(f"demo-{len(passages) + 1:05d}", etype, rng, names)
        passages.append(first)
        for _ in range(rng.randint(0, MAX_VARIANTS)):
            if len(passages) < n_passages:
                passages.append(_make_passage(f"demo-{len(passages) + 1:05d}", etype, rng, names, like=first))
    return passages


def _make_dev(
    passages: list[Passage], order: list[int], per_lang: int, rng: random.Random, split: str = "dev"
) -> list[dict[str, Any]]:
    """One question on each of the first ``per_lang * 7`` passages of ``order``, languages in turn."""
    rows: list[dict[str, Any]] = []
    counters = dict.fromkeys(DEV_LANGS, 0)
    for k, idx in enumerate(order[: per_lang * len(DEV_LANGS)]):
        passage = passages[idx]
        lang = DEV_LANGS[k % len(DEV_LANGS)]
        key = rng.choice(sorted(passage.etype.answers))
        counters[lang] += 1
        rows.append({
            "id": f"demo-{split}-{lang}-{counters[lang]:04d}",
            "question": _question(passage, key, lang),
            "answers": [_answer(passage, key)],
            "lang": lang,
            "docid": passage.docid,
        })
    rows.sort(key=lambda r: r["id"])
    return rows


def _negatives(
    passage: Passage, passages: list[Passage], by_type: dict[str, list[int]], rng: random.Random
) -> list[dict[str, str]]:
    # Sampling one extra and dropping the passage itself keeps this O(negatives), not O(corpus).
    same = [i for i in rng.sample(by_type[passage.etype.name], N_HARD_NEGATIVES + 1) if passages[i] is not passage]
    hard = same[:N_HARD_NEGATIVES]
    taken = {id(passage), *(id(passages[i]) for i in hard)}
    easy = [i for i in rng.sample(range(len(passages)), N_RANDOM_NEGATIVES + len(taken)) if id(passages[i]) not in taken]
    return [passages[i].record() for i in hard + easy[:N_RANDOM_NEGATIVES]]


def _make_train(passages: list[Passage], chosen: list[int], rng: random.Random) -> list[dict[str, Any]]:
    """Two facts of each chosen passage: one asked in English, one in a paper language (in turn).

    The English rows alone are the zero-shot setting's training data, all rows the supervised setting's.
    """
    by_type: dict[str, list[int]] = {}
    for i, p in enumerate(passages):
        by_type.setdefault(p.etype.name, []).append(i)
    rows: list[dict[str, Any]] = []
    for turn, idx in enumerate(chosen):
        passage = passages[idx]
        keys = rng.sample(sorted(passage.etype.answers), 2)  # decorrelate language from question type
        for key, lang in zip(keys, ("en", DEV_LANGS[turn % len(DEV_LANGS)])):
            rows.append({
                "query_id": f"demo-train-{len(rows) + 1:05d}",
                "query": _question(passage, key, lang),
                "lang": lang,
                "answers": [_answer(passage, key)],
                "positive_passages": [passage.record()],
                "negative_passages": _negatives(passage, passages, by_type, rng),
            })
    return rows


def _make_qg_pairs(passages: list[Passage], chosen: list[int], rng: random.Random) -> dict[str, Any]:
    """gp_squad (SQuAD layout) data: each chosen passage with QG_PAIRS_PER_LANG questions per training language."""
    data: list[dict[str, Any]] = []
    n = 0
    for idx in chosen:
        passage = passages[idx]
        qas: list[dict[str, Any]] = []
        for lang in TRAIN_LANGS:
            for key in rng.sample(sorted(passage.etype.answers), QG_PAIRS_PER_LANG):
                n += 1
                answer = _answer(passage, key)
                qas.append({
                    "id": f"demo-qg-{n:05d}", "question": _question(passage, key, lang), "lang": lang,
                    "answers": [{"text": answer, "answer_start": passage.text.index(answer)}],
                })
        data.append({"title": passage.title, "paragraphs": [{"context": passage.text, "qas": qas}]})
    return {"version": "demo", "data": data}


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")


_README = """\
# xqg offline demo data (synthetic)

Every passage and question here is synthetic: fictional towns, rivers, scientists, ships, festivals,
inventions, mountains and libraries with invented names, generated by code in this project with
`python -m xqg.demo.data --out data/demo` (seed {seed}, {n_passages} passages). Do not edit by hand;
`tests/demo/test_demo_data.py` checks that these files equal a fresh generation.

- `passages.jsonl`: corpus, {n_passages} English passages `{{"docid", "title", "text"}}` of about 100 words (as DPR's
  Wikipedia passages), in families of one passage and up to {max_variants} near-duplicates that keep its sentences
  and differ only in names and numbers.
- `dev.jsonl`: {n_dev} questions in XOR-TyDi retrieve format `{{"id", "question", "answers", "lang", "docid"}}`
  ({dev_langs}; `docid` is the gold passage). Answers are English strings found verbatim in the passage.
- `heldout.jsonl`: {n_heldout} more questions of the same form on other passages, for tuning (e.g. alpha), never dev.
- `train.jsonl`: {n_train} Tevatron-format examples `{{"query_id", "query", "lang", "answers",
  "positive_passages", "negative_passages"}}`: two facts of each of {n_train_passages} passages (none of them dev or
  held-out), one asked in English, one in a paper language ({train_langs}); negatives are {n_hard} same-type +
  {n_rand} random passages. The English rows alone train the zero-shot bi-encoder.
- `train_qg.json`: the query generator's {n_qg} pairs in XOR-TyDi's gold-paragraph layout (gp_squad, as DSI-QG):
  each of the {n_qg_passages} passages that are neither dev nor held-out, with {per_lang} question(s) per language
  ({train_langs}).

License: MIT, generated by this project.
"""


def make_demo_data(out_dir: str, n_passages: int = N_PASSAGES, seed: int = 0) -> dict[str, int]:
    """Write passages.jsonl, dev.jsonl, heldout.jsonl, train.jsonl, train_qg.json and README.md to ``out_dir``; return row counts."""
    rng = random.Random(seed)
    passages = make_passages(n_passages, rng)
    order = list(range(len(passages)))
    rng.shuffle(order)
    n_eval = len(DEV_LANGS) * (DEV_PER_LANG + HELDOUT_PER_LANG)
    if n_passages < n_eval + 2:
        raise ValueError(f"--n-passages {n_passages} is too small: dev and held-out questions need {n_eval + 2}")
    per_dev = DEV_PER_LANG * len(DEV_LANGS)
    dev = _make_dev(passages, order[:per_dev], DEV_PER_LANG, rng)
    heldout = _make_dev(passages, order[per_dev:n_eval], HELDOUT_PER_LANG, rng, split="heldout")
    train = _make_train(passages, order[n_eval:n_eval + N_TRAIN_PASSAGES], rng)
    # Drawn last, so the files above stay what they were before this file existed.
    qg = _make_qg_pairs(passages, order[n_eval:], rng)
    n_qg = sum(len(p["qas"]) for d in qg["data"] for p in d["paragraphs"])

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_jsonl(out / "passages.jsonl", (p.record() for p in passages))
    _write_jsonl(out / "dev.jsonl", dev)
    _write_jsonl(out / "heldout.jsonl", heldout)
    _write_jsonl(out / "train.jsonl", train)
    with (out / "train_qg.json").open("w", encoding="utf-8", newline="\n") as f:
        json.dump(qg, f, ensure_ascii=False, sort_keys=True)
        f.write("\n")
    readme = _README.format(
        seed=seed, n_passages=n_passages, n_dev=len(dev), n_heldout=len(heldout), n_train=len(train),
        n_train_passages=len(train) // 2, max_variants=MAX_VARIANTS,
        dev_langs=", ".join(DEV_LANGS), train_langs=", ".join(TRAIN_LANGS),
        n_hard=N_HARD_NEGATIVES, n_rand=N_RANDOM_NEGATIVES,
        n_qg=n_qg, n_qg_passages=len(qg["data"]), per_lang=QG_PAIRS_PER_LANG,
    )
    (out / "README.md").write_text(readme, encoding="utf-8", newline="\n")
    return {"passages": len(passages), "dev": len(dev), "heldout": len(heldout), "train": len(train), "train_qg": n_qg}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point: ``python -m xqg.demo.data --out data/demo``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="data/demo", help="output directory")
    parser.add_argument("--n-passages", type=int, default=N_PASSAGES)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts = make_demo_data(args.out, n_passages=args.n_passages, seed=args.seed)
    print(json.dumps(counts, sort_keys=True))


if __name__ == "__main__":
    main()
