"""A character-level text corpus generated from a small English grammar: nothing to download.

Why a generated grammar rather than text from an installed package: it is byte-identical on
every machine and Python version (stdlib docstrings change between releases, `this` holds 850
characters), it is as large as asked, and it has structure a small model learns in a few
epochs and then plateaus on: spelling within words is certain, word choice is not, and a verb
agrees in number with a subject a relative clause may have pushed a dozen characters back,
which only attention can carry.
"""

from __future__ import annotations

import functools
import random

import torch

from services.worker.data import DataSplit

#: Characters of the corpus; a token is its index here.
ALPHABET = " .abcdefghijklmnopqrstuvwxyz"
VOCAB_SIZE = len(ALPHABET)
#: The corpus never changes with the worker's seed; only the train/validation split does.
CORPUS_SEED = 0

_NOUNS = ("cat", "dog", "bird", "fox", "owl", "frog", "horse", "child", "farmer", "robot")
_PLURALS = {"child": "children", "fox": "foxes"}
_ADJECTIVES = ("small", "red", "quiet", "old", "happy", "clever", "brown", "tired")
_VERBS = ("see", "chase", "like", "find", "follow", "watch", "help", "push")
_INTRANSITIVE = ("run", "sleep", "sing", "wait", "jump")
_ADVERBS = ("today", "again", "slowly", "at night", "in the barn")


def _noun_phrase(rng: random.Random, plural: bool) -> str:
    noun = rng.choice(_NOUNS)
    if plural:
        noun = _PLURALS.get(noun, noun + "s")
    det = rng.choice(("the", "some", "many")) if plural else rng.choice(("the", "a", "every"))
    if rng.random() < 0.4:
        return f"{det} {rng.choice(_ADJECTIVES)} {noun}"
    return f"{det} {noun}"


def _verb(rng: random.Random, verbs: tuple[str, ...], plural: bool) -> str:
    verb = rng.choice(verbs)
    if plural:
        return verb
    return verb + ("es" if verb.endswith(("sh", "ch")) else "s")


def sentence(rng: random.Random) -> str:
    """One sentence: subject (maybe with a relative clause), a verb agreeing with it, the rest."""
    plural = rng.random() < 0.5
    subject = _noun_phrase(rng, plural)
    if rng.random() < 0.3:
        inner_plural = rng.random() < 0.5
        inner = _noun_phrase(rng, inner_plural)
        subject += f" that {inner} {_verb(rng, _VERBS, inner_plural)}"
    if rng.random() < 0.7:
        rest = f"{_verb(rng, _VERBS, plural)} {_noun_phrase(rng, rng.random() < 0.5)}"
    else:
        rest = _verb(rng, _INTRANSITIVE, plural)
    if rng.random() < 0.3:
        rest += " " + rng.choice(_ADVERBS)
    return f"{subject} {rest} ."


@functools.cache
def corpus(characters: int, seed: int = CORPUS_SEED) -> str:
    """At least `characters` of generated text, sentences joined by spaces; fixed by `seed`."""
    rng = random.Random(seed)
    parts: list[str] = []
    length = 0
    while length < characters:
        parts.append(sentence(rng))
        length += len(parts[-1]) + 1
    return " ".join(parts)


def encode(text: str) -> torch.Tensor:
    """Token ids (int64) of `text`; every character must be in `ALPHABET`."""
    index = {char: i for i, char in enumerate(ALPHABET)}
    return torch.tensor([index[char] for char in text], dtype=torch.int64)


def decode(tokens: torch.Tensor) -> str:
    return "".join(ALPHABET[int(t)] for t in tokens)


def load_text_split(
    seed: int = 0, val_fraction: float = 0.2, context: int = 32, characters: int = 30_000
) -> DataSplit:
    """The corpus cut into windows of `context` tokens, each with its next-token targets.

    Windows do not overlap; a seeded permutation sends `val_fraction` of them to validation.
    Inputs and targets are N x context int64.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    tokens = encode(corpus(characters))
    windows = (len(tokens) - 1) // context
    inputs = tokens[: windows * context].reshape(windows, context)
    targets = tokens[1 : windows * context + 1].reshape(windows, context)
    order = torch.randperm(windows, generator=torch.Generator().manual_seed(seed))
    cut = round(windows * val_fraction)
    val, train = order[:cut].sort().values, order[cut:].sort().values
    return DataSplit(
        train_x=inputs[train].clone(),
        train_y=targets[train].clone(),
        val_x=inputs[val].clone(),
        val_y=targets[val].clone(),
    )
