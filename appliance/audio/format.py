"""The output stream's format, which every tier and transport shares: 48 kHz PCM16 mono in 20 ms frames.

Standard library only, so that anything (worker records, the session protocol) can name it cheaply."""

OUTPUT_RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = OUTPUT_RATE * FRAME_MS // 1000  # 960
FRAME_BYTES = FRAME_SAMPLES * 2  # 1920 (mono int16)
FRAME_S = FRAME_MS / 1000
