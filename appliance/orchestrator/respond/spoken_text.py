"""A reply's text as it should be said: markdown's markup and emoji out, streamed.

Language models write markdown even when asked not to (and an OpenAI endpoint may serve any
model): a voice would read out "asterisk asterisk", "hash" or an emoji's name, and the page would
show the marks. :class:`SpokenText` takes the responder's pieces as they come and gives back the
text without the markup:

* emphasis and code marks (``*``, ``**``, ``__``, ``~~``, backticks) go; a single ``_`` stays;
* a link ``[the docs](https://…)`` is its text, "the docs" (its address is not said);
* at the start of a line: heading marks (``#``), bullets (``-``, ``*``, ``+``, ``•``) and the
  indentation before them go, and so does a code fence line (```` ```python ````) whole;
* emoji (and the joiners and variation selectors that build them) go.

Newlines stay: the sentence rule (:mod:`appliance.sentences`) ends a sentence at one, so a list
item or a heading is its own sentence. Spaces go out with the word after them (so "water 🥚." is
"water.", and a line's trailing spaces are dropped), and a character that the next one decides is
held back (a ``#``/``-`` at a line's start, a lone ``_`` or ``~``, a part of a fence): the output
does not depend on how the text was split into pieces, and no word waits for the next piece.
"""

from __future__ import annotations

__all__ = ["SpokenText", "spoken"]

_BULLETS = "-*+•"
_DROPPED = "*`["
_PAIRED = "_~"  # dropped when doubled ("__bold__", "~~struck~~")
_CLOSING = ".,!?;:)"
_JOINERS = {0x200D, 0xFE0E, 0xFE0F, 0x20E3}


def _is_emoji(c: str) -> bool:
    o = ord(c)
    return (
        0x1F000 <= o <= 0x1FAFF  # pictographs, emoticons, transport, symbols, flags
        or 0x2600 <= o <= 0x27BF  # miscellaneous symbols, dingbats
        or 0x1F1E6 <= o <= 0x1F1FF
        or 0xE0020 <= o <= 0xE007F  # tag characters (subdivision flags)
        or o in _JOINERS
    )


class SpokenText:
    def __init__(self) -> None:
        self._held = ""
        self._line_start = True
        self._in_fence_line = False  # the rest of a ``` line (its language name) is dropped
        self._in_link_target = False  # inside a link's "(https://…)"
        self._space = ""  # spaces go out with the next word: one before dropped marks may go too
        self._dropped = False  # a mark was dropped since the last character that went out

    def feed(self, piece: str) -> str:
        return self._clean(self._held + piece, final=False)

    def flush(self) -> str:
        """What is still held back, now that nothing follows (a lone mark: dropped)."""
        return self._clean(self._held, final=True)

    def _clean(self, text: str, final: bool) -> str:
        self._held = ""
        out: list[str] = []
        i = 0
        while i < len(text):
            c, rest = text[i], text[i:]
            if c == "\n":
                out.append(c)
                self._space, self._dropped = "", False
                self._line_start, self._in_fence_line, self._in_link_target = True, False, False
                i += 1
                continue
            if self._in_fence_line or self._in_link_target:
                self._in_link_target = self._in_link_target and c != ")"
                i += 1
                continue
            if self._line_start:
                skip = self._line_mark(rest, final)
                if skip is None:  # the next piece decides
                    self._held = rest
                    break
                if skip:
                    i += skip
                    continue
                self._line_start = False
            if c in " \t":
                if not (self._space and self._dropped):  # "a 😀 b": one space, not two
                    self._space += c
                i += 1
                continue
            if c == "]":  # "[the docs](https://…)" is said "the docs"
                if len(rest) == 1 and not final:
                    self._held = rest
                    break
                self._in_link_target = rest[1:2] == "("
                self._dropped = True
                i += 2 if self._in_link_target else 1
                continue
            if c in _PAIRED:
                if len(rest) == 1 and not final:
                    self._held = rest
                    break
                if rest[1:2] == c:
                    self._dropped = True
                    i += 2
                    continue
            elif c in _DROPPED or _is_emoji(c):
                self._dropped = True
                i += 1
                continue
            if self._space and not (self._dropped and c in _CLOSING):  # "water 🥚." → "water."
                out.append(self._space)
            self._space, self._dropped = "", False
            out.append(c)
            i += 1
        if final:
            self._space = ""  # trailing space is not said
        return "".join(out)

    def _line_mark(self, rest: str, final: bool) -> int | None:
        """At a line's start: how many characters of markup to drop (0: none), None: undecided."""
        c = rest[0]
        if c in " \t":
            return 1
        if c == "`":
            fence = len(rest) - len(rest.lstrip("`"))
            if fence == len(rest) and fence < 3 and not final:
                return None
            if fence >= 3:
                self._in_fence_line = True
                return fence
            return 0
        if c == "#":
            marks = len(rest) - len(rest.lstrip("#"))
            if marks == len(rest) and not final:
                return None
            return marks
        if c in _BULLETS:
            if len(rest) == 1:
                return 1 if final else None
            if rest[1] in " \t":
                return 2
        return 0


def spoken(text: str) -> str:
    """The whole of ``text`` as it should be said."""
    cleaner = SpokenText()
    return cleaner.feed(text) + cleaner.flush()
