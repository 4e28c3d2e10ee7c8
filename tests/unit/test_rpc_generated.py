"""appliance/rpc/ must be exactly what scripts/gen_rpc.py makes from proto/ (run `make proto`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_not_stale(tmp_path):
    spec = importlib.util.spec_from_file_location("gen_rpc", ROOT / "scripts" / "gen_rpc.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    gen.generate(tmp_path)
    fresh = tmp_path / "appliance" / "rpc"
    names = sorted(p.name for p in fresh.iterdir())
    assert names == ["tts_pb2.py", "tts_pb2.pyi", "tts_pb2_grpc.py"]
    for name in names:
        committed = (ROOT / "appliance" / "rpc" / name).read_text()
        assert committed == (fresh / name).read_text(), f"appliance/rpc/{name} is stale: run `make proto`"


def test_abi_matches_contract():
    from appliance.rpc import tts_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["TTSService"]
    assert pb.DESCRIPTOR.package == "appliance.tts.v1"
    assert sorted(m.name for m in service.methods) == sorted(
        [
            "StartSession",
            "EndSession",
            "Synthesize",
            "Control",
            "ListModels",
            "LoadModel",
            "UnloadModel",
            "GetCapabilities",
        ]
    )
    synth = service.methods_by_name["Synthesize"]
    assert synth.client_streaming and synth.server_streaming

    def fields(msg):
        return {f.name: f.number for f in pb.DESCRIPTOR.message_types_by_name[msg].fields}

    assert fields("StartSessionRequest") == {"session_id": 1, "model_id": 2, "options": 3}
    assert fields("TextChunk") == {"session_id": 1, "text": 2, "is_final": 3, "sequence_number": 4}
    assert fields("AudioFrame") == {
        "session_id": 1,
        "audio_data": 2,
        "sample_rate": 3,
        "frame_duration_ms": 4,
        "sequence_number": 5,
        "is_final": 6,
        "text_offset": 7,  # added for failover (the contract's fields 1-6 are unchanged)
    }
    assert fields("ControlRequest") == {"session_id": 1, "command": 2}
    assert fields("ControlResponse") == {"success": 1, "message": 2, "timestamp_ms": 3}
    assert dict(pb.ControlCommand.items()) == {
        "CONTROL_COMMAND_UNSPECIFIED": 0,
        "PAUSE": 1,
        "RESUME": 2,
        "STOP": 3,
        "RELOAD": 4,
    }
    assert "appliance.rpc" in sys.modules
