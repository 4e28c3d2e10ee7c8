"""One conversation and its parts: listening (VAD, ASR), barge-in, playback (pacing reply audio),
the session state machine, and the per-turn timings."""

from appliance.orchestrator.session.conversation import Conversation
from appliance.orchestrator.session.limits import SessionEnded
from appliance.orchestrator.session.states import State, StateMachine
from appliance.orchestrator.session.turn import TurnTimes

__all__ = ["Conversation", "SessionEnded", "State", "StateMachine", "TurnTimes"]
