#!/usr/bin/env bash
# Builds livekit-server (a Go program) from its module at a pinned release, once per machine, into a
# cache outside the clone keyed by version: $APPLIANCE_LIVEKIT_CACHE/<version>/livekit-server (default
# /var/cache/appliance-livekit, or ~/.cache/appliance-livekit where that is not writable). A throwaway
# module outside the clone requires the release and `go build`s its cmd/server; nothing of LiveKit's
# source lands in the repo. Prints the binary's path; exits non-zero with Go's own error.
# v1.9.11: the newest 1.9 release the module proxy serves (it refuses v1.9.9: "This module version is
# not available"); its go.mod has no replace directives, which `go build` of a dependency would ignore.
set -euo pipefail
version=${LIVEKIT_SERVER_VERSION:-v1.9.11}
default_cache=/var/cache/appliance-livekit
mkdir -p "$default_cache" 2>/dev/null && [ -w "$default_cache" ] || default_cache=${XDG_CACHE_HOME:-$HOME/.cache}/appliance-livekit
cache=${APPLIANCE_LIVEKIT_CACHE:-$default_cache}
out="$cache/$version/livekit-server"
if [ -x "$out" ]; then echo "$out"; exit 0; fi
command -v go >/dev/null || { echo "build-livekit-server: Go is not installed (https://go.dev/dl/)" >&2; exit 1; }
mkdir -p "$cache/$version"
work=$(mktemp -d "$cache/$version/build.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
t0=$SECONDS
go mod init appliance.local/livekit-build >/dev/null 2>&1
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/livekit/livekit-server/cmd/server"
GO
go get "github.com/livekit/livekit-server/cmd/server@$version" >&2
go build -trimpath -o "$work/livekit-server" github.com/livekit/livekit-server/cmd/server >&2
mv "$work/livekit-server" "$out"
echo "build-livekit-server: built $version in $((SECONDS - t0)) s" >&2
echo "$out"
