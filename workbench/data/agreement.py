"""Subject-verb agreement sentences generated from templates (Linzen et al. 2016; Goldberg 2019).

Every sentence has a known subject and verb, optionally separated by an attractor noun of the
opposite number ("The key to the cabinets is ..."). Half the sentences are made ungrammatical by
flipping the verb's number, so a classifier can be trained to judge agreement, and the true
subject -> verb dependency of every sentence is known for attention analysis.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# (singular, plural) pairs; all single WordPiece tokens in BERT's uncased vocabulary.
NOUNS = [
    ("key", "keys"), ("author", "authors"), ("pilot", "pilots"), ("teacher", "teachers"),
    ("dog", "dogs"), ("farmer", "farmers"), ("doctor", "doctors"), ("student", "students"),
    ("senator", "senators"), ("painting", "paintings"), ("book", "books"), ("car", "cars"),
    ("manager", "managers"), ("singer", "singers"), ("officer", "officers"), ("girl", "girls"),
]
ATTRACTORS = [
    ("cabinet", "cabinets"), ("table", "tables"), ("friend", "friends"), ("neighbor", "neighbors"),
    ("window", "windows"), ("house", "houses"), ("parent", "parents"), ("lawyer", "lawyers"),
    ("garden", "gardens"), ("school", "schools"), ("player", "players"), ("island", "islands"),
]
# (singular verb, plural verb, continuation)
VERBS = [
    ("is", "are", "old"), ("was", "were", "here"), ("has", "have", "arrived"),
    ("likes", "like", "music"), ("knows", "know", "the answer"), ("seems", "seem", "happy"),
    ("runs", "run", "fast"), ("writes", "write", "letters"),
]
PREPOSITIONS = ["near", "behind", "beside", "of", "with", "from"]


@dataclass(frozen=True)
class AgreementSentence:
    sentence: str
    label: int  # 1 = the verb agrees with the subject
    subject_index: int  # word index of the subject noun
    verb_index: int  # word index of the verb
    attractor_index: int  # word index of the attractor noun, -1 if none
    attractor_mismatch: int  # 1 if the attractor's number differs from the subject's


def generate_agreement(n: int, seed: int = 0, attractor_rate: float = 0.7) -> list[AgreementSentence]:
    """`n` sentences, balanced between grammatical and ungrammatical, deterministic for a seed."""
    rng = random.Random(seed)
    sentences = []
    for index in range(n):
        noun = rng.choice(NOUNS)
        plural = rng.random() < 0.5
        words = ["the", noun[plural]]
        subject_index = 1
        attractor_index, mismatch = -1, 0
        if rng.random() < attractor_rate:
            attractor = rng.choice(ATTRACTORS)
            attractor_plural = rng.random() < 0.5
            words += [rng.choice(PREPOSITIONS), "the", attractor[attractor_plural]]
            attractor_index, mismatch = len(words) - 1, int(attractor_plural != plural)
        verb = rng.choice(VERBS)
        grammatical = index % 2 == 0
        verb_is_plural = plural if grammatical else not plural
        verb_index = len(words)
        words += [verb[verb_is_plural], *verb[2].split()]
        sentence = " ".join(words).capitalize() + " ."
        sentences.append(
            AgreementSentence(sentence, int(grammatical), subject_index, verb_index, attractor_index, mismatch)
        )
    rng.shuffle(sentences)
    return sentences
