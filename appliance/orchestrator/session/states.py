"""The session state machine. Transitions not in the table raise, so an impossible state is a
bug caught at the transition, not a confused session later.

    IDLE ──hello──> LISTENING ──reply audio──> SPEAKING ──reply done──> WAITING_FOR_INPUT
                      ▲   │                     │   ▲                       │
                      │   └──no reply───────────┼───┼──────────────────────>│
                      │                  speech │   │ false alarm           │ speech / text
                      │                         ▼   │                       │
                      └──confirmed turn──── BARGED_IN                       │
                      ▲─────────────────────────────────────────────────────┘
    any state ──bye / timeout / limit / error──> TERMINATED
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class State(str, enum.Enum):
    IDLE = "IDLE"
    LISTENING = "LISTENING"
    SPEAKING = "SPEAKING"
    BARGED_IN = "BARGED_IN"
    WAITING_FOR_INPUT = "WAITING_FOR_INPUT"
    TERMINATED = "TERMINATED"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.IDLE: frozenset({State.LISTENING, State.TERMINATED}),
    State.LISTENING: frozenset({State.SPEAKING, State.WAITING_FOR_INPUT, State.TERMINATED}),
    State.SPEAKING: frozenset({State.BARGED_IN, State.WAITING_FOR_INPUT, State.TERMINATED}),
    State.BARGED_IN: frozenset({State.LISTENING, State.SPEAKING, State.TERMINATED}),
    State.WAITING_FOR_INPUT: frozenset({State.LISTENING, State.SPEAKING, State.TERMINATED}),
    State.TERMINATED: frozenset(),
}


class InvalidTransition(RuntimeError):
    def __init__(self, current: State, target: State) -> None:
        super().__init__(f"invalid session transition {current.value} → {target.value}")
        self.current = current
        self.target = target


class StateMachine:
    def __init__(
        self, session_id: str, on_change: Callable[[State, State], None] = lambda old, new: None
    ) -> None:
        self.session_id = session_id
        self.state = State.IDLE
        self._on_change = on_change

    def can(self, target: State) -> bool:
        return target in TRANSITIONS[self.state]

    def to(self, target: State) -> None:
        if target == self.state:
            return
        if not self.can(target):
            raise InvalidTransition(self.state, target)
        old, self.state = self.state, target
        log.info("state session=%s %s -> %s", self.session_id, old.value, target.value)
        self._on_change(old, target)

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED
