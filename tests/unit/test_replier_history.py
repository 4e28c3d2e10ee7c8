from types import SimpleNamespace

from appliance.orchestrator.respond import Turn
from appliance.orchestrator.session.replying import Replier


def _forget(history: list[Turn]) -> list[Turn]:
    replier = SimpleNamespace(history=list(history))
    Replier.forget_last_exchange(replier)
    return replier.history


def test_a_turn_the_person_went_on_with_leaves_the_history_with_what_was_heard_of_its_reply():
    before = [Turn("user", "Hello."), Turn("assistant", "Hi there.")]
    assert _forget([*before, Turn("user", "Good morning."), Turn("assistant", "You")]) == before
    assert _forget([*before, Turn("user", "Good morning.")]) == before  # nothing of the reply heard


def test_forgetting_an_empty_history_changes_nothing():
    assert _forget([]) == []
