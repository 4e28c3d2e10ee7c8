import random

import pytest

from appliance.tts.text import TextSegmenter, is_speakable, split_text

# Pieces a random text is built from: plain words, clause/sentence punctuation,
# abbreviations, decimals, ellipses, quotes, newlines, emoji, non-ASCII, long words.
_WORDS = [
    "the",
    "a",
    "dog",
    "cat",
    "walked",
    "quickly",
    "into",
    "park",
    "house",
    "yesterday",
    "we",
    "I",
    "you",
    "they",
    "blue",
    "green",
    "and",
    "but",
    "or",
    "so",
    "because",
    "while",
    "which",
    "although",
    "when",
    "android",
    "order",
    "sometimes",
    "whenever",
    "with",
    "to",
    "for",
    "in",
    "of",
    "that",
    "like",
    "about",
    "into-the-wild",
    "within",
    "To",
    "The",
    "Mr.",
    "Mrs.",
    "Dr.",
    "St.",
    "e.g.",
    "i.e.",
    "etc.",
    "vs.",
    "a.m.",
    "p.m.",
    "U.S.",
    "J.",
    "R.",
    "3.14",
    "1,000",
    "2.",
    "10.",
    "$4.50",
    "café",
    "Grüße",
    "¿Qué",
    "tal",
    "niño",
    "東京",
    "Привет",
    "😀",
    "🎉",
    "...",
    "…",
    "-",
    "--",
    "—",
    "x.y",
    "well—actually",
    "so-called",
    "supercalifragilisticexpialidocious",
]
_PUNCT = [".", "!", "?", ",", ";", ":", "...", "…", "?!", '."', ".)", "!’", ""]
_SPACES = [" ", " ", " ", " ", "  ", "\n", "\n\n", "\t", " \n "]


def _random_text(rng: random.Random, n_words: int) -> str:
    parts = []
    for _ in range(n_words):
        word = rng.choice(_WORDS)
        if rng.random() < 0.15:
            word = word.capitalize()
        if rng.random() < 0.25:
            word += rng.choice(_PUNCT)
        parts.append(word)
        parts.append(rng.choice(_SPACES))
    if parts and rng.random() < 0.5:
        parts.pop()  # sometimes no trailing whitespace
    if rng.random() < 0.3:
        parts.insert(0, rng.choice(_SPACES))
    return "".join(parts)


def _feed(text: str, sizes, **kw) -> list[str]:
    seg = TextSegmenter(**kw)
    out, i = [], 0
    for size in sizes:
        out += seg.push(text[i : i + size])
        i += size
        if i >= len(text):
            break
    assert i >= len(text)
    return out + seg.flush()


def _chunkings(text: str, rng: random.Random):
    n = len(text)
    yield "all", [n]
    yield "chars", [1] * n
    words, cur = [], 0
    for part in text.split(" "):
        words.append(len(part) + 1)
        cur += len(part) + 1
    yield "words", words
    for k in range(3):
        yield f"random{k}", [rng.randint(0, 12) for _ in range(3 * n + 10)] + [n]


def _check_invariants(text: str, segments: list[str], max_chars: int) -> None:
    assert " ".join(segments).split() == text.split()  # nothing lost, duplicated or reordered
    assert "".join("".join(s.split()) for s in segments) == "".join(text.split())
    for s in segments:
        assert s and s == s.strip()
        assert len(s) <= max_chars or len(s.split()) == 1  # only an over-long single word may exceed


_PARAMS = [
    {},
    {"first_clause_min_words": 2, "first_clause_max_words": 3, "max_segment_chars": 30},
    {"first_clause_min_words": 1, "first_clause_max_words": 1, "max_segment_chars": 12},
    {"first_clause_min_words": 3, "first_clause_max_words": 8, "max_segment_chars": 80},
    {"first_clause_min_words": 2, "first_clause_max_words": 4, "first_segment_hard_max_words": 6},
    {"first_clause_min_words": 1, "first_clause_max_words": 2, "first_segment_hard_max_words": 2},
    {"first_clause_max_words": 20, "first_segment_hard_max_words": 30, "max_segment_chars": 60},
]


@pytest.mark.parametrize("params", _PARAMS)
@pytest.mark.parametrize("seed", range(40))
def test_chunking_never_changes_the_segments(seed, params):
    rng = random.Random(seed)
    text = _random_text(rng, rng.randint(0, 60))
    expected = split_text(text, **params)
    _check_invariants(text, expected, params.get("max_segment_chars", 400))
    for name, sizes in _chunkings(text, rng):
        assert _feed(text, sizes, **params) == expected, name


def test_segments_come_out_as_soon_as_they_are_complete():
    rng = random.Random(7)
    for _ in range(50):
        text = _random_text(rng, 40)
        expected = split_text(text, max_segment_chars=60)
        seg = TextSegmenter(max_segment_chars=60)
        got = []
        for i, ch in enumerate(text):
            got += seg.push(ch)
            # emitted + pending is exactly what was pushed so far
            assert "".join((" ".join(got) + seg.pending).split()) == "".join(text[: i + 1].split())
        final = seg.flush()
        assert got + final == expected
        assert len(final) <= 2  # at most the last sentence (+ its leading clause) waits for flush


def test_simple_sentences():
    assert split_text("Hello! How are you?") == ["Hello!", "How are you?"]
    assert split_text("") == []
    assert split_text("   \n ") == []
    assert split_text("No terminator at all") == ["No terminator at all"]


def test_abbreviations_decimals_initials_are_not_sentence_ends():
    text = (
        "Mr. and Mrs. Smith met Dr. Jones on St. Mark's at 9 a.m. today. "
        "Pi is 3.14, e.g. roughly, i.e. close enough, etc. vs. the U.S. value. "
        "J. R. R. Tolkien wrote it."
    )
    assert split_text(text, first_clause_max_words=100, first_segment_hard_max_words=100) == [
        "Mr. and Mrs. Smith met Dr. Jones on St. Mark's at 9 a.m. today.",
        "Pi is 3.14, e.g. roughly, i.e. close enough, etc. vs. the U.S. value.",
        "J. R. R. Tolkien wrote it.",
    ]


def test_ellipsis_quotes_brackets_and_newlines():
    assert split_text("Well... maybe not. Wait… What?") == ["Well... maybe not.", "Wait…", "What?"]
    assert split_text('He said "Stop." Then he left (quietly.) Fine.') == [
        'He said "Stop."',
        "Then he left (quietly.)",
        "Fine.",
    ]
    assert split_text("Version 2.0.1 is out.Really") == ["Version 2.0.1 is out.Really"]
    assert split_text("A list:\n1. Eggs\n2. Milk\n\nDone") == ["A list:", "1. Eggs", "2. Milk", "Done"]
    assert split_text("Really?! Yes!!! Ok.") == ["Really?!", "Yes!!!", "Ok."]


def test_trailing_dot_is_held_until_next_chunk_or_flush():
    seg = TextSegmenter()
    assert seg.push("It costs 3.") == []
    assert seg.pending == "It costs 3."
    assert seg.push("14 dollars. Bye") == ["It costs 3.14 dollars."]
    assert seg.pending == "Bye"
    seg = TextSegmenter()
    assert seg.push("See you soon.") == []
    assert seg.push(" ") == ["See you soon."]
    seg = TextSegmenter()
    assert seg.push("Bye.") == []
    assert seg.flush() == ["Bye."]
    seg = TextSegmenter()
    assert seg.push("Ask Mr.") == []
    assert seg.push(" Smith. ") == ["Ask Mr. Smith."]


def test_long_first_sentence_is_split_at_a_clause():
    text = (
        "When I walked to the store yesterday, I saw a dog chasing a cat around the park. "
        "Then, when I walked to the store yesterday, I saw a dog chasing a cat around the park."
    )
    segs = split_text(text)
    # the clause boundary (7 words in) wins over the earlier soft boundary before "to"
    assert segs[0] == "When I walked to the store yesterday,"
    assert segs[1] == "I saw a dog chasing a cat around the park."
    assert segs[2].startswith("Then, when") and len(segs) == 3  # later sentences stay whole


@pytest.mark.parametrize(
    "text, segments",
    [
        (
            "The weather today is sunny with a light breeze from the west.",
            ["The weather today is sunny", "with a light breeze from the west."],
        ),
        ("Hello!", ["Hello!"]),
        (
            "Please turn off the kitchen lights before you go to bed.",
            ["Please turn off the kitchen lights", "before you go to bed."],
        ),
        ("Good morning, how did you sleep?", ["Good morning, how did you sleep?"]),  # 6 words: whole
        ("Set a timer for ten minutes.", ["Set a timer for ten minutes."]),
        (
            "I went to the store to buy some milk. Then I went to the bank to get some cash out.",
            ["I went to the store", "to buy some milk.", "Then I went to the bank to get some cash out."],
        ),
    ],
)
def test_first_segment_examples(text, segments):
    assert split_text(text) == segments


def test_first_segment_hard_max_without_boundaries():
    text = "Lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod."
    assert split_text(text) == ["Lorem ipsum dolor sit amet consectetur adipiscing elit", "sed do eiusmod."]
    assert split_text(text, first_segment_hard_max_words=6) == [
        "Lorem ipsum dolor sit amet consectetur",
        "adipiscing elit sed do eiusmod.",
    ]
    # boundaries past the hard max are not used
    text = "Lorem ipsum dolor sit amet consectetur adipiscing elit sed, with do eiusmod tempor."
    assert split_text(text)[0] == "Lorem ipsum dolor sit amet consectetur adipiscing elit"
    # a run-on without punctuation gets the same first cut
    assert split_text("one two three four five six seven eight nine ten eleven")[0] == (
        "one two three four five six seven eight"
    )


def test_first_segment_min_words():
    # soft/clause boundaries with fewer than min words before them are skipped
    assert split_text("To be honest I think we should leave for the airport right now.") == [
        "To be honest I think we should leave",
        "for the airport right now.",
    ]
    assert split_text("In fact, if you ask me, that movie was far too long.") == [
        "In fact, if you ask me,",
        "that movie was far too long.",
    ]
    assert split_text("I went to the store to buy some milk and eggs today.")[0] == "I went to the store"
    assert split_text("Oh, and by the way, the package arrived this morning.")[0] == "Oh, and by the way,"
    assert split_text("Oh, and by the way, the parcel came today.", first_clause_min_words=5) == [
        "Oh, and by the way,",
        "the parcel came today.",
    ]
    for text in ("To be or not to be, that is the question.", "So if I were you I would go to bed now."):
        first = split_text(text)[0]
        assert len(first.split()) >= 3


def test_first_segment_leaves_more_than_a_word_or_two():
    # the clause boundary would leave "right?": the earlier soft boundary is used
    assert split_text("I think we should go to the beach, right?") == [
        "I think we should go",
        "to the beach, right?",
    ]
    # the soft boundary would leave "until midnight.": fallback cut, not after "is"
    assert split_text("The new restaurant downtown is open until midnight.") == [
        "The new restaurant downtown",
        "is open until midnight.",
    ]
    # a hard cut would leave "morning.": cut earlier
    assert split_text("Remember that the garbage truck comes early Monday morning.") == [
        "Remember that the garbage truck comes",
        "early Monday morning.",
    ]
    # three words after the boundary are enough
    assert split_text("Please wake me up early tomorrow in the morning.") == [
        "Please wake me up early tomorrow",
        "in the morning.",
    ]
    # too short to leave 3 words after min words: stays whole
    assert split_text("Hi there you lovely lot.", first_clause_max_words=3) == ["Hi there you lovely lot."]
    for seg in split_text("Sure, I will turn off all the lights now, okay?")[1:]:
        assert len(seg.split()) >= 3


def test_fallback_cut_does_not_end_on_a_leaning_word():
    assert split_text("Sure, I will turn off all the lights now, okay?") == [
        "Sure, I will turn off",
        "all the lights now, okay?",
    ]
    assert split_text("Lorem ipsum dolor sit amet consectetur the elit sed do eiusmod.")[0] == (
        "Lorem ipsum dolor sit amet consectetur the elit"
    )
    assert split_text("Lorem ipsum dolor sit amet consectetur adipiscing the sed do eiusmod.")[0] == (
        "Lorem ipsum dolor sit amet consectetur adipiscing"
    )
    # nothing but leaning words: the plain hard cut
    assert split_text("the the the the the the the the the the the.")[0] == " ".join(["the"] * 8)


def test_soft_words_only_as_whole_lower_case_words():
    text = "Yesterday we watched The Lord Of The Rings together at home with our kids."
    assert split_text(text)[0] == "Yesterday we watched The Lord Of The Rings"  # no boundary: hard cut
    text = "My friends thought within reason that tomorrow's into-the-wild trip was great fun."
    assert split_text(text)[0] == "My friends thought within reason"


def test_first_clause_respects_min_words_and_conjunctions():
    text = "Well, I think that we should go to the park and play football with all of our friends today."
    assert split_text(text) == [
        "Well, I think",  # "Well," has too few words; the conjunction "and" is past the hard max
        "that we should go to the park and play football with all of our friends today.",
    ]
    # short first sentence: no clause split
    assert split_text("Yes, and no. Ok.") == ["Yes, and no.", "Ok."]
    # "android"/"order"/"so-called" are not conjunctions
    text = "The android ordered so-called sandwiches from a vendor downtown in the old city center today."
    assert split_text(text) == [
        "The android ordered so-called sandwiches",
        "from a vendor downtown in the old city center today.",
    ]


def test_first_clause_is_emitted_before_the_sentence_ends():
    seg = TextSegmenter()
    words = "I would really like to tell you, my dear friend, about the remarkable trip we took last summer."
    got = []
    for w in words.split(" "):
        got += seg.push(w + " ")
        if got:
            break
    assert got == ["I would really like to tell you,"]
    assert "summer" not in seg.pending


def test_soft_boundary_waits_for_the_text_that_decides_it():
    # Word 9 could still be a conjunction (a clause boundary within the hard max of 8
    # words, which would win): the soft boundary is taken once word 9 is complete.
    seg = TextSegmenter()
    assert seg.push("We stayed inside for hours with the kids yesterday") == []
    assert seg.push(" ") == ["We stayed inside"]
    seg = TextSegmenter()
    assert seg.push("We stayed inside for hours with the kids because it") == []
    assert seg.push(" ") == []  # is the rest after "because" 3 words or more?
    assert seg.push("w") == ["We stayed inside for hours with the kids"]
    assert seg.push("as raining. ") == ["because it was raining."]
    # "to" is a soft word only once the next character shows it is not "tomorrow"
    seg = TextSegmenter()
    assert seg.push("Please finish the big job to") == []
    assert seg.push("morrow before noon, thanks.") + seg.flush() == [
        "Please finish the big job tomorrow",
        "before noon, thanks.",
    ]


@pytest.mark.parametrize(
    "text, first",
    [
        (
            "We packed the tents; the forecast promised sunshine for the whole long weekend.",
            "We packed the tents;",
        ),
        ("Here is the plan: we leave early in the morning and come back late at night.", "Here is the plan:"),
        (
            "My old friend Tom — the one from school — visited us last week with his kids.",
            "My old friend Tom —",
        ),
        (
            "The first half went well - the second half was a complete disaster for all.",
            "The first half went well -",
        ),
        (
            "I stayed at home all day because it was raining heavily over the city.",
            "I stayed at home all day",
        ),
    ],
)
def test_first_clause_boundaries(text, first):
    segs = split_text(text)
    assert segs[0] == first
    assert " ".join(segs) == text


def test_unspeakable_segments_are_still_emitted():
    segs = split_text("😀. Hi there. ... ")
    assert segs == ["😀.", "Hi there.", "..."]
    assert [s for s in segs if is_speakable(s)] == ["Hi there."]


def test_flush_resets_and_next_utterance_is_clause_split_again():
    long = "After the meeting ended late in the evening, everyone went home to rest and recover. "
    seg = TextSegmenter()
    first = seg.push(long + long) + seg.flush()
    second = seg.push(long + long) + seg.flush()
    assert first == second
    assert first[0] == "After the meeting ended late in the evening,"
    assert len(first) == 3


def test_reset_discards_pending_text():
    seg = TextSegmenter()
    assert seg.push("Half a sent") == []
    seg.reset()
    assert seg.pending == ""
    assert seg.flush() == []
    assert seg.push("") == []


def test_unpunctuated_run_on_is_cut_at_spaces():
    rng = random.Random(3)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "epsilon",
        "zeta",
        "eta",
        "theta",
        "iota",
        "kappa",
        "lambda",
        "mu",
    ]
    text = " ".join(rng.choice(words) for _ in range(900))
    assert len(text) > 5000
    segs = split_text(text)
    assert len(segs) > 10
    assert all(len(s) <= 400 for s in segs)
    assert " ".join(segs).split() == text.split()
    # streaming does not stall: pieces come out before flush
    seg = TextSegmenter()
    streamed = []
    for i in range(0, len(text), 7):
        streamed += seg.push(text[i : i + 7])
    assert len(streamed) >= len(segs) - 1
    assert streamed + seg.flush() == segs


def test_cap_prefers_a_late_clause_boundary():
    text = "Okay. " + "word " * 30 + "end, " + "more " * 60
    segs = split_text(text, max_segment_chars=200)
    assert segs[1].endswith("end,")
    assert all(len(s) <= 200 for s in segs)


def test_overlong_single_word_is_not_cut():
    giant = "x" * 1000
    assert split_text(f"Look {giant} there.", max_segment_chars=50) == ["Look", giant, "there."]


def test_speakable():
    assert is_speakable("Hi")
    assert is_speakable("42")
    assert is_speakable("東京")
    assert is_speakable("¿Qué?")
    assert not is_speakable("😀 🎉")
    assert not is_speakable("... !?")
    assert not is_speakable("   ")
    assert not is_speakable("")


def test_unspeakable_segment_does_not_use_up_the_first_clause_rule():
    text = "🎉\nBecause the weather was lovely all week long, we decided to go hiking in the mountains."
    assert split_text(text) == [
        "🎉",
        "Because the weather was lovely all week long,",
        "we decided to go hiking in the mountains.",
    ]


def test_non_ascii():
    assert split_text("Grüße, café. ¿Qué tal?") == ["Grüße, café.", "¿Qué tal?"]
    assert split_text("Привет! Как дела? Хорошо.") == ["Привет!", "Как дела?", "Хорошо."]


def test_large_input_in_small_chunks_is_linear_enough():
    rng = random.Random(11)
    text = _random_text(rng, 20000)[:100_000]
    run_on = ("lorem ipsum dolor sit amet " * 4000)[:100_000]
    giant = "y" * 50_000 + " tail"
    for t in (text, run_on, giant):
        seg = TextSegmenter()
        out = []
        for i in range(0, len(t), 10):
            out += seg.push(t[i : i + 10])
        out += seg.flush()
        _check_invariants(t, out, 400)
        assert out == split_text(t)


def test_invalid_arguments():
    with pytest.raises(ValueError):
        TextSegmenter(first_clause_min_words=0)
    with pytest.raises(ValueError):
        TextSegmenter(first_clause_min_words=5, first_clause_max_words=4)
    with pytest.raises(ValueError):
        TextSegmenter(max_segment_chars=0)
    with pytest.raises(ValueError):
        TextSegmenter(first_clause_max_words=9)  # above the default hard max of 8
    with pytest.raises(ValueError):
        TextSegmenter(first_clause_max_words=6, first_segment_hard_max_words=5)
    TextSegmenter(first_clause_max_words=9, first_segment_hard_max_words=9)


@pytest.mark.parametrize("seed", range(20))
def test_span_ends_locate_every_segment_in_the_raw_text(seed):
    """push_spans/flush_spans give each segment's end in the text pushed (AudioFrame.text_offset):
    the raw text between two ends is the segment, whatever the chunking."""
    rng = random.Random(seed)
    text = (
        "Here is a long story for you.  Once upon a time, Mr. Smith lived alone on an island far from "
        "the coast… and then?\nYes! It cost 3.14 dollars 😀 ... the end"
    )
    seg = TextSegmenter()
    out, i = [], 0
    while i < len(text):
        n = rng.randint(1, 12)
        out += seg.push_spans(text[i : i + n])
        i += n
    out += seg.flush_spans()
    assert [p for p, _ in out] == split_text(text)
    prev = 0
    for piece, end in out:
        assert text[prev:end].strip() == piece
        prev = end
    assert prev == len(text)
