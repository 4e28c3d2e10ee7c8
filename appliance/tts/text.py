"""Incremental sentence/clause segmentation of streamed text for the TTS worker.

Piper synthesises one sentence at a time, so text arriving in chunks (LLM
tokens) is cut into segments as soon as a segment is certain to be complete.

Rules (see ``TextSegmenter``):

* Sentence ends: the rule in ``appliance.sentences`` (a run of ``. ! ? …``
  plus closing quotes/brackets before whitespace, or a newline; not after
  abbreviations, acronyms, initials, a list number at the start of a segment,
  nor an ellipsis before a lower-case word), with the end of input at
  ``flush`` counting as a newline.
* Clause boundaries: ``, ; :`` or an en/em dash followed by whitespace, a
  spaced hyphen `` - ``/`` -- ``, or the whitespace before one of the
  conjunctions in ``CONJUNCTIONS``.
* First segment of an utterance (until a speakable one is out): if the first
  sentence has more than ``first_clause_max_words`` words (an open one: as
  soon as it has more), it is cut, with min/max/hard = the three word limits:
  1. at its first clause boundary with >= min words before it, if <= hard are;
  2. else at its first soft boundary (the whitespace before a lower-case word
     in ``SOFT_WORDS``: with, to, that, ...) with >= min words before it, if
     <= hard are;
  3. else after word k = min(hard, sentence words - 3), or if that word leans
     on the next ("the", "is", "to", ...) after the last word in min..k that
     does not; no cut if k < min.
  Every cut leaves >= 3 words of the sentence after it: a step whose boundary
  would leave fewer falls through to the next one. Words: whitespace-separated.
* Segments with nothing speakable ("😀", "...") are emitted too, so no text
  is lost; callers drop them with ``is_speakable``.
* A segment longer than ``max_segment_chars`` is cut at its last clause
  boundary in the second half of the limit, else at its last whitespace within
  the limit; a single word longer than the limit is emitted whole.
* ``push_spans``/``flush_spans`` also give each segment's end offset in the
  text pushed so far (Unicode code points, whitespace after it not included):
  what the worker reports as ``AudioFrame.text_offset``, so a client can
  re-send the rest of a text after losing a stream.

All cuts fall on whitespace, so no word is ever split, and every decision is
taken only once the text that decides it has arrived (a conjunction or soft
word counts once the character after it is there; the first cut is certain at
the latest once the hard max + 3 words have arrived): the output does not
depend on how the input was chunked.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from itertools import islice

from appliance.sentences import SentenceScanner

__all__ = ["CONJUNCTIONS", "SOFT_WORDS", "TextSegmenter", "is_speakable", "split_text"]

CONJUNCTIONS = ("and", "but", "or", "so", "because", "while", "which", "although", "when")
SOFT_WORDS = tuple(
    "with from to for at in on of about into after before until like than by as if that then where "  # noqa: SIM905
    "who whose during without through since unless whether".split()
)
_MIN_REST = 3  # words a first-segment cut must leave in the sentence after it
_CLINGING = frozenset(  # a fallback cut should not end on these: they lean on the next word
    "a an the this these those my your his her its our their some any no every each all both many much "  # noqa: SIM905
    "few several is are was were am be been will would can could shall should may might must do does did "
    "have has had not very too just i we they he she nor yet".split()
    + list(CONJUNCTIONS + SOFT_WORDS)
)

_EDGE = re.compile(r"\s\S|\S\s")
_NON_SPACE = re.compile(r"\S")
_SPACE = re.compile(r"\s")
_WORD = re.compile(r"\S+")
# A match's end() is the clause boundary: just after the punctuation, or at the
# start of the conjunction. Every alternative needs one character after the
# thing it recognises, so an incomplete match at the buffer end is never taken.
_CLAUSE = re.compile(
    r"(?:[,;:]|(?<=\s)--?|[–—]+)(?=\s)"
    r"|(?<=\s)(?=(?:" + "|".join(CONJUNCTIONS) + r")[^\w'’-])",
    re.IGNORECASE,
)
_SOFT = re.compile(r"(?<=\s)(?=(?:" + "|".join(SOFT_WORDS) + r")[^\w'’-])")
_NO = -1  # "no first-segment cut", as opposed to a position or None (not known yet)


def is_speakable(segment: str) -> bool:
    """True if ``segment`` has at least one letter or digit (any script)."""
    return any(ch.isalnum() for ch in segment)


def split_text(text: str, **kw) -> list[str]:
    """Segment a complete text: ``push(text) + flush()`` on a fresh segmenter."""
    seg = TextSegmenter(**kw)
    return seg.push(text) + seg.flush()


class TextSegmenter:
    """Turns streamed text into TTS segments as soon as they are complete."""

    def __init__(
        self,
        first_clause_min_words: int = 3,
        first_clause_max_words: int = 6,
        max_segment_chars: int = 400,
        first_segment_hard_max_words: int = 8,
    ) -> None:
        if first_clause_min_words < 1:
            raise ValueError("first_clause_min_words must be >= 1")
        if first_clause_max_words < first_clause_min_words:
            raise ValueError("first_clause_max_words must be >= first_clause_min_words")
        if first_segment_hard_max_words < first_clause_max_words:
            raise ValueError("first_segment_hard_max_words must be >= first_clause_max_words")
        if max_segment_chars < 1:
            raise ValueError("max_segment_chars must be >= 1")
        self._min_words = first_clause_min_words
        self._max_words = first_clause_max_words
        self._hard_words = first_segment_hard_max_words
        self._max_chars = max_segment_chars
        self._fed = 0  # characters pushed over the segmenter's life
        self.reset()

    @property
    def pending(self) -> str:
        """Buffered text not yet emitted."""
        return self._buf[self._pos :]

    def reset(self) -> None:
        """Discard pending text and start a new utterance."""
        self._base = self._fed  # offset of _buf[0] in everything pushed
        self._buf = ""
        self._pos = 0  # start of the pending segment in _buf
        self._sentences = SentenceScanner()
        self._dirty = False  # worth re-checking the open (unterminated) sentence
        self._first = True  # no speakable segment emitted yet in this utterance

    def push(self, text: str) -> list[str]:
        """Append streamed text; return the segments completed by it."""
        return [piece for piece, _end in self.push_spans(text)]

    def flush(self) -> list[str]:
        """End of utterance: return everything left, then reset."""
        return [piece for piece, _end in self.flush_spans()]

    def push_spans(self, text: str) -> list[tuple[str, int]]:
        """Like ``push``, with each segment's end offset in all the text pushed so far."""
        self._fed += len(text)
        return self._push(text)

    def flush_spans(self) -> list[tuple[str, int]]:
        """Like ``flush``, with each segment's end offset."""
        out = self._push("\n")  # a newline ends whatever sentence is open
        rest = self.pending.strip()
        if rest:  # not expected; never lose text
            out.append((rest, self._fed))
        self.reset()
        return [(piece, min(end, self._fed)) for piece, end in out]

    def _push(self, text: str) -> list[tuple[str, int]]:
        if not text:
            return []
        pos = self._pos
        if pos:
            self._base += pos
            self._buf = self._buf[pos:]
            self._sentences.rebase(pos)
            self._pos = 0
        # Decisions about an unterminated sentence can only change where a word
        # starts or ends; re-checking only then keeps long words/spaces linear.
        if not self._buf or self._buf[-1].isspace() != text[0].isspace() or _EDGE.search(text):
            self._dirty = True
        self._buf += text
        return self._drain()

    # -- internals ---------------------------------------------------------

    def _drain(self) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        buf = self._buf
        while True:
            m = _NON_SPACE.search(buf, self._pos)
            self._pos = m.start() if m else len(buf)
            if m is None:
                break
            end = self._sentences.find(buf, self._pos)
            if end is None and not self._dirty:
                break
            cut = self._choose(end)
            if cut is None:
                self._dirty = False
                break
            assert cut > self._pos
            piece = buf[self._pos : cut].strip()
            self._pos = cut
            out.append((piece, self._base + cut))
            if self._first and is_speakable(piece):
                self._first = False
            self._dirty = True
        return out

    def _choose(self, end: int | None) -> int | None:
        """Where to cut the pending text now, or None to wait for more."""
        buf, start = self._buf, self._pos
        known = end is not None
        seg_end = end if known else len(buf)
        if self._first:
            cut = self._first_cut(start, seg_end, known)
            if cut is None:
                return None
            if cut != _NO:
                return self._cap(start, cut, final=True)
        return self._cap(start, seg_end, final=known)

    def _first_cut(self, start: int, seg_end: int, known: bool) -> int | None:
        """Cut for the first segment: a position, _NO, or None (not decided yet)."""
        buf, lo, hard = self._buf, self._min_words, self._hard_words
        # Every word of an open sentence is in buf (the last one may still grow);
        # only its first hard + _MIN_REST words matter.
        words = list(islice(_WORD.finditer(buf, start, seg_end), hard + _MIN_REST))
        n = len(words)  # the sentence's word count, or a lower bound for it
        if n <= self._max_words:
            return _NO if known else None
        starts = [w.start() for w in words]
        # A usable boundary lies before word hard + 1 ends; recognising it needs
        # at most the character after that word.
        endpos = min(seg_end + 1 if known else len(buf), words[hard].end() + 1 if n > hard else len(buf))
        seen_all = known or (n > hard and words[hard].end() < len(buf))
        for rx in (_CLAUSE, _SOFT):
            for m in rx.finditer(buf, start, endpos):
                k = bisect_left(starts, m.end())  # words before the boundary
                if m.start() <= start or k < lo:
                    continue  # (a match at start would look behind it, at text now gone)
                if k <= hard and n - k >= _MIN_REST:
                    return m.end()
                if k <= hard and not known:
                    return None  # will enough of the sentence follow it?
                break  # later boundaries are later still / leave even less
            else:
                if not seen_all:
                    return None  # an earlier boundary may still be recognised
        if not known and n < hard + _MIN_REST:
            return None
        k = min(hard, n - _MIN_REST)
        j = next((j for j in range(k, lo - 1, -1) if words[j - 1].group().lower() not in _CLINGING), k)
        return words[j - 1].end() if k >= lo else _NO

    def _clauses(self, start: int, end: int):
        # A match starting at ``start`` would look behind it, at text that may
        # already be gone; it could only cut off nothing or a lone mark anyway.
        for m in _CLAUSE.finditer(self._buf, start, end):
            if m.start() > start:
                yield m.end()

    def _cap(self, start: int, end: int, final: bool) -> int | None:
        """Cut for a piece starting at ``buf[start:end]``; ``final``: the piece ends at ``end``."""
        buf, limit = self._buf, self._max_chars
        if end - start <= limit or _NON_SPACE.search(buf, start + limit, end) is None:
            return end if final else None  # fits (or may still fit)
        # Only buf[start:wend] decides the cut, so it is the same for any chunking.
        wend = start + limit + 1
        best = None
        for q in self._clauses(start, wend):
            if q - start >= limit // 2:
                best = q
        if best is None:
            for x in range(wend - 1, start, -1):
                if buf[x].isspace():
                    return x
            m = _SPACE.search(buf, wend, end)  # one word longer than the limit
            if m:
                best = m.start()
            elif final:
                best = end
        return best
