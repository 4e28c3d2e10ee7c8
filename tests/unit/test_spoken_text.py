import random

import pytest

from appliance.orchestrator.respond.spoken_text import SpokenText, spoken


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("The capital of France is **Paris**.", "The capital of France is Paris."),
        ("It is *really* `fast` and __bold__ and ~~not~~ so.", "It is really fast and bold and not so."),
        (
            "## Ingredients\n- two eggs\n* water\n  + salt\n• pepper",
            "Ingredients\ntwo eggs\nwater\nsalt\npepper",
        ),
        ("1. Boil water.\n2. Add the eggs.", "1. Boil water.\n2. Add the eggs."),
        ("```python\nprint(1)\n```\nDone.", "\nprint(1)\n\nDone."),
        ("Great question! 😀👍🏽 Here it is ❤️.", "Great question! Here it is."),
        (
            "snake_case stays, and -5 degrees, and 3 - 2 too.",
            "snake_case stays, and -5 degrees, and 3 - 2 too.",
        ),
        ("A line ends with #hashtag # and a * star  ", "A line ends with #hashtag # and a star"),
        ("Read [the guide](https://example.com/guide) first.", "Read the guide first."),
        ("A [note] stays a note, and (this) stays.", "A note stays a note, and (this) stays."),
        ("", ""),
        ("-", ""),
        ("#", ""),
        ("_", "_"),
    ],
)
def test_markup_and_emoji_are_not_said(written, said):
    assert spoken(written) == said


@pytest.mark.parametrize("seed", range(30))
def test_the_result_does_not_depend_on_how_the_text_was_split(seed):
    text = (
        "# Boiling an egg\n\nHere is **how** to do it 🍳:\n- Put the egg in `water`.\n"
        "- Boil it for __seven__ minutes.\n```text\nno code\n```\n1. Cool it ~~down~~.\n## Done! "
        "See [the guide](https://example.com/eggs)."
    )
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 25)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    cleaner = SpokenText()
    streamed = "".join(cleaner.feed(p) for p in pieces) + cleaner.flush()
    assert streamed == spoken(text)
    assert "*" not in streamed and "#" not in streamed and "`" not in streamed and "🍳" not in streamed
    assert "Put the egg in water." in streamed and "Boil it for seven minutes." in streamed
    assert streamed.endswith("Done! See the guide.") and "example" not in streamed


def test_words_are_not_held_back():
    # Only a mark the next character decides waits: the first words go out with their piece.
    cleaner = SpokenText()
    assert cleaner.feed("Sure") == "Sure"
    assert cleaner.feed(", the **ans") == ", the ans"  # the space waits for its word
    assert cleaner.feed("wer** is 4.\n") == "wer is 4.\n"
    assert cleaner.feed("-") == ""  # a bullet, or a minus sign?
    assert cleaner.feed("5 is less.") == "-5 is less."
