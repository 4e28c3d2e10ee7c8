#!/usr/bin/env bash
# `make run-tls`: the embedded appliance behind a local Caddy with HTTPS (Caddy's internal CA), so a
# phone or laptop on the LAN can use the microphone. Usage: scripts/run-tls.sh [HOST] [HTTPS_PORT]
set -euo pipefail
cd "$(dirname "$0")/.."
host=${1:-$(hostname -f 2>/dev/null || hostname)}
https_port=${2:-8443}
data=${XDG_DATA_HOME:-$HOME/.local/share}
export APPLIANCE_HOST="$host" APPLIANCE_TLS=internal APPLIANCE_UPSTREAM=127.0.0.1:8080
export APPLIANCE_HTTPS_PORT="$https_port" APPLIANCE_HTTP_PORT=$((https_port - 1))
export APPLIANCE_CA_DIR="$data/caddy/pki/authorities/local"
.venv/bin/appliance run --port 8080 &
app=$!
trap 'kill $app 2>/dev/null; wait $app 2>/dev/null' EXIT
echo "appliance over TLS: https://$host:$https_port/  (trust its root: https://$host:$https_port/trust)"
caddy run --config etc/appliance/Caddyfile --adapter caddyfile
