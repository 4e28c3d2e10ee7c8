#!/usr/bin/env bash
# The page's LiveKit client: `npm ci` of appliance/web/livekit/ (livekit-client pinned, every
# package's integrity in its package-lock.json) into a cache outside the clone keyed by the lock
# file's sha256, then its self-contained ES module (and licence) copied to appliance/web/vendor/,
# which git ignores. Without npm the page's LiveKit choice says the client is not installed.
set -euo pipefail
cd "$(dirname "$0")/.."
src=appliance/web/livekit
out=appliance/web/vendor
key=$(sha256sum "$src/package-lock.json" | cut -c1-16)
cache=${APPLIANCE_WEB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/appliance-web}/livekit-$key
module=$cache/node_modules/livekit-client/dist/livekit-client.esm.mjs
if [ ! -f "$module" ]; then
    command -v npm >/dev/null || { echo "build-web-livekit: npm is not installed (Debian package npm)" >&2; exit 1; }
    mkdir -p "$cache"
    cp "$src/package.json" "$src/package-lock.json" "$cache/"
    (cd "$cache" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
fi
mkdir -p "$out"
cp "$module" "$out/livekit-client.esm.mjs"
cp "$cache/node_modules/livekit-client/LICENSE" "$out/livekit-client.LICENSE" 2>/dev/null || true
echo "$out/livekit-client.esm.mjs"
