"""The ecosystem's protocols over the appliance's workers and ASR: Wyoming (Home Assistant) in
:mod:`.wyoming_server`, the OpenAI audio API (``/v1`` on the orchestrator) in :mod:`.openai_api`.

Sits beside the orchestrator and uses its worker pool (:mod:`appliance.orchestrator.workers`)
and its ASR engine; nothing below imports it."""
