from __future__ import annotations

import itertools

import pytest

from appliance.orchestrator.session.states import TRANSITIONS, InvalidTransition, State, StateMachine


def test_a_conversation_with_a_barge_in():
    seen = []
    sm = StateMachine("s", lambda old, new: seen.append((old, new)))
    for target in [
        State.LISTENING,
        State.SPEAKING,
        State.BARGED_IN,
        State.LISTENING,
        State.SPEAKING,
        State.WAITING_FOR_INPUT,
        State.LISTENING,
        State.WAITING_FOR_INPUT,
        State.TERMINATED,
    ]:
        sm.to(target)
    assert sm.terminated and len(seen) == 9 and seen[0] == (State.IDLE, State.LISTENING)


def test_false_alarm_resumes_speaking():
    sm = StateMachine("s")
    sm.to(State.LISTENING)
    sm.to(State.SPEAKING)
    sm.to(State.BARGED_IN)
    sm.to(State.SPEAKING)
    assert sm.state is State.SPEAKING


@pytest.mark.parametrize(
    "source, target",
    [(s, t) for s, t in itertools.product(State, State) if s != t and t not in TRANSITIONS[s]],
)
def test_every_transition_outside_the_table_is_refused(source, target):
    sm = StateMachine("s")
    sm.state = source
    with pytest.raises(InvalidTransition):
        sm.to(target)
    assert sm.state is source


def test_terminated_is_final_and_every_state_can_terminate():
    assert TRANSITIONS[State.TERMINATED] == frozenset()
    for s in State:
        if s is not State.TERMINATED:
            assert State.TERMINATED in TRANSITIONS[s]


def test_same_state_is_a_no_op():
    seen = []
    sm = StateMachine("s", lambda o, n: seen.append(n))
    sm.to(State.IDLE)
    assert seen == []
