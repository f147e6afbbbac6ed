#!/usr/bin/env bash
# Installs every Debian 12 package offhook needs to build, test, benchmark and run its
# demo. Idempotent: when everything is present it touches nothing (no apt-get update).
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake pkg-config
  libstrophe-dev libsofia-sip-ua-dev libevent-dev libhiredis-dev libxml2-dev libcmocka-dev
  libssl-dev libldap2-dev
  # the real servers the tests, demo and benchmarks start on loopback
  redis-server redis-tools redis-sentinel prosody prosody-modules lua-unbound sip-tester
  kamailio kamailio-presence-modules kamailio-tls-modules openssl ejabberd
  slapd ldap-utils
  # fuzzing (fuzz/run.sh: clang's libFuzzer) and memcheck (scripts/valgrind.sh)
  clang libclang-rt-14-dev valgrind
  # packaging (tests/package/test_deb.sh builds and installs the .deb)
  debhelper man-db
  # test clients (Debian's Python: no PyPI here)
  python3 python3-pytest python3-slixmpp profanity tmux
  # promtool: the alerting rules' tests and the /metrics lint (deploy/prometheus/, ctest)
  prometheus
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "setup: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
