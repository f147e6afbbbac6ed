#!/usr/bin/env bash
# Installs what is needed, builds, and runs the demo on embedded defaults: a local Redis,
# Prosody and a sipp "PBX" playing Alice's call, while Bob's client prints what it shows.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh >/dev/null
OFFHOOK_BUILD="$PWD/build" exec /usr/bin/python3 scripts/demo.py "$@"
