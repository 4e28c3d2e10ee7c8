"""The orchestrator: the HTTP server (:mod:`.server`) joining transports to conversations
(:mod:`.session`), replies from a responder (:mod:`.respond`), and voice from the TTS workers
(:mod:`.workers`). Import from the subpackages; this package exports nothing itself."""

__all__: list[str] = []
