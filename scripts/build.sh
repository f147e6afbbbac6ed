#!/usr/bin/env bash
# Configures and builds offhook into build/ (warnings are errors). Extra arguments go to
# cmake, e.g. -DOFFHOOK_SANITIZE=ON. BUILD_DIR overrides the directory.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DOFFHOOK_WERROR=ON "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
