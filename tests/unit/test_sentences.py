"""The one sentence-boundary rule: what ends a sentence, what does not, and that streaming,
the worker's segmenter and the orchestrator's checks all agree on it."""

from __future__ import annotations

import random

import pytest

from appliance.sentences import find_voiceable_end, split_sentences
from appliance.tts.text import TextSegmenter


def sentences(text: str) -> list[str]:
    done, rest = split_sentences(text, final=True)
    assert rest == ""
    return done


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you?", ["Hello there.", "How are you?"]),
        ("Stop! Now?! Yes…  Fine", ["Stop!", "Now?!", "Yes…", "Fine"]),
        ("one\ntwo", ["one", "two"]),  # a newline always ends a sentence
        ('"Stop." She left.', ['"Stop."', "She left."]),  # closing quotes stay with their sentence
        ("(Really?) Yes.", ["(Really?)", "Yes."]),
        ("He said «oui.» Then left.", ["He said «oui.»", "Then left."]),
        ("A {b.} C", ["A {b.}", "C"]),
        ("Pi is 3.14 today.", ["Pi is 3.14 today."]),
        ("Mr. Smith met Dr. Who etc. vs. them.", ["Mr. Smith met Dr. Who etc. vs. them."]),
        (
            "Use e.g. this, i.e. that, at 5 a.m. in the U.S. now.",
            ["Use e.g. this, i.e. that, at 5 a.m. in the U.S. now."],
        ),
        ("J. R. R. Tolkien wrote.", ["J. R. R. Tolkien wrote."]),
        ("So do I. You too.", ["So do I.", "You too."]),  # "I." is not an initial
        ("1. Milk 2. Eggs", ["1. Milk 2.", "Eggs"]),  # a list number only at the start of a sentence
        ("I counted to 10. Then stopped.", ["I counted to 10.", "Then stopped."]),
        ("Wait... what? Oh… Right.", ["Wait... what?", "Oh…", "Right."]),
        ("Wait...\nwhat", ["Wait...", "what"]),
        ("", []),
        ("   \n ", []),
    ],
)
def test_what_ends_a_sentence(text, expected):
    assert sentences(text) == expected


@pytest.mark.parametrize(
    ("text", "done", "rest"),
    [
        ("Hi.", [], "Hi."),  # the next character decides ("Hi.x" is not an end)
        ("Hi. ", ["Hi."], ""),
        ("Hi. There", ["Hi."], "There"),
        ("Hi!\n", ["Hi!"], ""),
        ("Wait... ", [], "Wait... "),  # an ellipsis waits for the next word
        ("Wait... w", [], "Wait... w"),
        ("Wait... W", ["Wait..."], "W"),
        ("Mr. ", [], "Mr. "),
        ("  lead", [], "lead"),
    ],
)
def test_an_open_text_keeps_what_it_cannot_decide(text, done, rest):
    assert split_sentences(text) == (done, rest)


# The cases the three rules this one replaced decided differently, and what is meant now:
# the orchestrator's reply split, the orchestrator's "can the worker voice something" check,
# and the worker's segmenter. The segmenter's answers are kept, because they are what is voiced.
DIFFERED = [
    ("Mr. Smith is here. Yes.", ["Mr. Smith is here.", "Yes."]),  # the reply split cut after "Mr."
    ("Wait... what is it? Go.", ["Wait... what is it?", "Go."]),  # ... and before "what"
    ('"Hi." Then go.', ['"Hi."', "Then go."]),  # ... but not after the closing quote
    ("first line\nsecond line", ["first line", "second line"]),  # ... nor at a newline
    ("1. Item one. Done.", ["1. Item one.", "Done."]),  # ... and it cut after "1."
    ("Is it ›this.› Yes.", ["Is it ›this.›", "Yes."]),  # the voiceable check did not know › }
]


@pytest.mark.parametrize(("text", "expected"), DIFFERED)
def test_cases_the_old_rules_differed_on(text, expected):
    assert sentences(text) == expected
    assert _segments(text) == expected


def test_find_voiceable_end():
    text = "Mr. Smith is here. And"
    assert find_voiceable_end(text) == text.index(" And")
    assert find_voiceable_end(text, text.index(" And")) is None
    assert find_voiceable_end("Hi.\n", 3) is None  # the newline after a voiced sentence starts nothing
    assert find_voiceable_end("Hi.\nMore\n", 3) == len("Hi.\nMore")
    assert find_voiceable_end("e.g. this") is None
    assert find_voiceable_end("") is None


def _segments(text: str) -> list[str]:
    """The worker's segments with its first-segment and length cuts out of the way: sentences only."""
    seg = TextSegmenter(
        first_clause_max_words=10_000, first_segment_hard_max_words=10_000, max_segment_chars=100_000
    )
    return seg.push(text) + seg.flush()


_WORDS = (  # noqa: SIM905 — words read better as words
    "the a dog walked into park we I and but Mr. Dr. e.g. i.e. etc. a.m. U.S. J. R. 3.14 2. 10. "
    "café 東京 😀 ... … - — so-called"
).split()
_PUNCT = [".", "!", "?", ",", "...", "…", "?!", '."', ".)", "!’", ".»", ""]
_SPACES = [" ", " ", " ", "  ", "\n", "\t", " \n "]


@pytest.mark.parametrize("seed", range(40))
def test_streaming_the_segmenter_and_one_pass_agree(seed):
    rng = random.Random(seed)
    text = "".join(
        (w.capitalize() if rng.random() < 0.2 else w)
        + (rng.choice(_PUNCT) if rng.random() < 0.3 else "")
        + rng.choice(_SPACES)
        for w in rng.choices(_WORDS, k=rng.randint(1, 60))
    )
    whole = sentences(text)
    assert _segments(text) == whole
    done, rest, i = [], "", 0
    while i < len(text):  # streamed in random pieces: the same sentences, each found once
        step = rng.randint(1, 7)
        more, rest = split_sentences(rest + text[i : i + step])
        done += more
        i += step
    last, _ = split_sentences(rest, final=True)
    assert done + last == whole
