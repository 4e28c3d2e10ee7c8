# make run   — the appliance on this machine (creates .venv and installs what it needs)
# make test  — the whole suite (unit, integration with the real Piper voice and Whisper)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Debian packages the tests and the local default use (installed when run as root).
APT_PACKAGES := espeak-ng sox caddy chromium redis-server
# The deploy tier (tests/deploy): a Debian container under systemd-nspawn, Ansible over ssh, the
# offline bundle's apt repository (dpkg-scanpackages, apt-ftparchive).
APT_PACKAGES += debootstrap systemd-container openssh-client dpkg-dev apt-utils
# systemd-analyze verify/security on the unit files (tests/unit/test_systemd_units.py).
APT_PACKAGES += systemd

# make run-tls — the same behind a local Caddy (HTTPS, internal CA) for other devices on the LAN
.PHONY: run run-tls test test-unit test-integration test-deploy bundle bench system-deps proto lint clean

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 $$missing; \
	else echo "warning: not root; install these Debian packages yourself:$$missing" >&2; fi

run: $(STAMP)
	$(BIN)/appliance run --port 8080

run-tls: $(STAMP)
	scripts/run-tls.sh

test: $(STAMP)
	$(BIN)/python -m pytest tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

# As root with the tools: boots a bookworm container and runs ansible/site.yml against it (offline bundle).
test-deploy: $(STAMP)
	$(BIN)/python -m pytest tests/deploy

# The offline install bundle (wheels, debs, models) in dist/: ansible-playbook … -e appliance_bundle=dist/…
bundle: $(STAMP)
	$(BIN)/python -m appliance bundle --out dist

bench: $(STAMP)
	$(BIN)/appliance bench tts --out bench-tts.json

# Regenerate appliance/rpc/ from proto/ (tests/unit/test_rpc_generated.py fails when it is stale).
proto: $(STAMP)
	$(BIN)/python scripts/gen_rpc.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
