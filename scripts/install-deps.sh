#!/usr/bin/env bash
# Install what building and testing Outrider needs. Idempotent: a second run only checks.
#   scripts/install-deps.sh            system packages + the test venv (.venv-test/)
#   scripts/install-deps.sh --apt-only system packages only
set -euo pipefail
cd "$(dirname "$0")/.."

APT_ONLY=0
[ "${1:-}" = "--apt-only" ] && APT_ONLY=1

# Debian packages: build (libssl, nghttp2, libcrypt, pkg-config), tests (openssl for test certificates,
# curl, nghttp2-client, venv; iptables
# and iproute2 for `outrider iptables --apply` in a network namespace), bench (wrk; nghttpd from
# nghttp2-server as the h2c target of scripts/bench-h2c-tools.sh)
PKGS=(libssl-dev libnghttp2-dev libcrypt-dev pkg-config openssl curl python3-venv nghttp2-client nghttp2-server wrk procps iptables iproute2)

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ] && [ -z "$SUDO" ]; then
    echo "install-deps: missing ${missing[*]}, and neither root nor sudo to install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "$APT_ONLY" -eq 1 ] && exit 0

# Python venv for the integration tests, pinned by Tests/integration/requirements.txt
REQ=Tests/integration/requirements.txt
VENV=.venv-test
PY="${PYTHON:-python3}"
stamp="$VENV/.requirements.sha256"
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$VENV/bin/python" -c 'import pytest, httpx, websockets, h11, pytest_timeout, h2, grpc, authlib, flask' 2>/dev/null; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "install-deps: creating $VENV"
  "$PY" -m venv "$VENV" || { rm -rf "$VENV"; /usr/bin/python3 -m venv "$VENV"; }
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQ"
echo "$want" > "$stamp"
echo "install-deps: $VENV ready"
