"""Where a sentence ends: the one rule shared by the TTS worker's segmenter and the orchestrator.

The worker voices streamed text a sentence at a time (``appliance.tts.text.TextSegmenter``); the
orchestrator shows the reply to the user sentence by sentence and needs to know when the worker
has a complete sentence to voice. All of them use this module, so they agree on every sentence.

The rule. A sentence ends after a run of ``. ! ? …`` plus any closing quotes/brackets
(``" ' ” ’ » › ) ] }``) that is followed by whitespace; a newline always ends one. These are not
sentence ends:

* a single ``.`` after a known abbreviation (Mr. Dr. etc. vs. …), after a dotted acronym (e.g. i.e.
  a.m. U.S.), after a single capital initial (J. R. R.; but "I." ends a sentence), or after a 1–3
  digit list number at the start of a sentence ("1. Item"; for the segmenter, of a segment);
* a mark not followed by whitespace (3.14, "Hi!" at the very end of the text so far);
* an ellipsis (``..``, ``...``, ``…``) whose next word starts lower-case ("Wait... what?" is one
  sentence); an ellipsis followed only by whitespace is undecided until the next word comes.

Every decision is taken only once the text that decides it has arrived, so for streamed text the
answer never depends on how it was chunked: an end found in a prefix is an end in the whole text.
``final=True`` (or ``TextSegmenter.flush``) treats the end of the text as a newline.

Compared with the simpler patterns this replaces: ``(?<=[.!?…])\\s+`` split after "Mr.", "e.g.",
"J." and "1." and before a lower-case word after "...", but not after a closing quote ("Hi." she
said) nor at a bare newline; ``[.!?…]["'”’»)\\]]*\\s|\\n`` also matched after abbreviations, missed
``›`` and ``}``, and took a newline right after the last sentence for a new one.
"""

from __future__ import annotations

import re

__all__ = ["ABBREVIATIONS", "SentenceScanner", "find_voiceable_end", "split_sentences"]

ABBREVIATIONS = frozenset(
    (
        "mr",
        "mrs",
        "ms",
        "mx",
        "dr",
        "prof",
        "st",
        "jr",
        "sr",
        "rev",
        "gen",
        "capt",
        "col",
        "lt",
        "sgt",
        "etc",
        "vs",
        "approx",
        "inc",
        "ltd",
        "corp",
        "co",
        "mt",
        "fig",
        "cf",
    )
)  # before a "." that ends nothing (lower-cased, without the dot)

_CANDIDATE = re.compile(r"[.!?…\n]")
_TERMS = re.compile(r"[.!?…]*")
_CLOSERS = re.compile(r"[\"'”’»›)\]}]*")
_NON_SPACE = re.compile(r"\S")
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+[^\W\d_]")


class SentenceScanner:
    """Finds sentence ends in a text that only grows at its end, without rescanning: it remembers
    how far there is no end, and where an undecided one stands (a long run of dots or spaces is
    read once, however it arrives)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._scan = 0  # no sentence end in text[start:_scan]
        # Sentence end at text[i] not yet decidable: (i, end of terminators, end of closers,
        # end of the spaces seen after an ellipsis).
        self._hold: tuple[int, int, int, int] | None = None

    def rebase(self, n: int) -> None:
        """The text lost its first ``n`` characters (all of them before the current sentence)."""
        self._scan -= n
        if self._hold:
            self._hold = tuple(x - n for x in self._hold)

    def find(self, text: str, start: int) -> int | None:
        """End of the sentence that starts at ``text[start]`` (not a space), or None while the
        text so far cannot tell. The end is just after its terminators and closers, or at the
        newline that ends it; the whitespace after it is not included."""
        n = len(text)
        pos = self._scan = max(self._scan, start)
        while True:
            m = _CANDIDATE.search(text, pos)
            if m is None:
                self._scan = n
                return None
            i = self._scan = m.start()
            if text[i] == "\n":
                return i
            if self._hold and self._hold[0] == i:  # resume, don't rescan long runs
                _, j, k, ws_from = self._hold
            else:
                j = k = ws_from = i
            if j == k:
                j = k = _TERMS.match(text, j).end()
            k = _CLOSERS.match(text, k).end()
            if k == n:
                self._hold = (i, j, k, k)
                return None  # "3." or "Hi!" at the end: wait for the next character
            pos = k
            if not text[k].isspace():
                continue
            run = text[i:j]
            if run == ".":
                if _dot_is_not_an_end(text, i, start):
                    continue
            elif "!" not in run and "?" not in run:  # ellipsis: look at the next word
                ws_from = max(k, ws_from)
                nxt = _NON_SPACE.search(text, ws_from)
                if text.find("\n", ws_from, nxt.start() if nxt else n) < 0:
                    if nxt is None:
                        self._hold = (i, j, k, n)
                        return None
                    if text[nxt.start()].islower():
                        continue
            return k


def _dot_is_not_an_end(text: str, i: int, start: int) -> bool:
    s = i
    while s > start and (text[s - 1].isalpha() or text[s - 1] == "."):
        s -= 1
    token = text[s:i]
    if not token:  # list marker "12." at the start of the sentence
        d = i
        while d > start and text[d - 1].isdigit():
            d -= 1
        return d == start and 0 < i - d <= 3
    if token.lower() in ABBREVIATIONS or _DOTTED.fullmatch(token):
        return True
    return len(token) == 1 and token.isupper() and token != "I"


def find_voiceable_end(text: str, start: int = 0) -> int | None:
    """End of the first complete sentence in ``text[start:]`` (leading whitespace skipped), or
    None if there is none yet: whether the worker's segmenter has a sentence it can voice."""
    m = _NON_SPACE.search(text, start)
    return None if m is None else SentenceScanner().find(text, m.start())


def split_sentences(text: str, final: bool = False) -> tuple[list[str], str]:
    """The complete sentences in ``text`` (stripped) and the rest, still open, from its first
    non-space. Feed streamed text as ``done, rest = split_sentences(rest + piece)``; with
    ``final`` the end of the text ends the last sentence and the rest is empty."""
    src = text + "\n" if final else text
    scanner = SentenceScanner()
    done: list[str] = []
    pos = 0
    while (m := _NON_SPACE.search(src, pos)) is not None:
        end = scanner.find(src, m.start())
        if end is None:
            return done, text[m.start() :]
        done.append(src[m.start() : end].strip())
        pos = end
    return done, ""
