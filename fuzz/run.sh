#!/usr/bin/env bash
# Builds offhook's libFuzzer targets with clang (ASan + UBSan) into build-fuzz/ and runs
# each one, one after another, for a bounded time on a temporary copy of its seed corpus
# (fuzz/corpus/<target>/ is never modified). Exits non-zero if any target crashed, leaked,
# timed out or hit a failed invariant; prints the inputs that did.
#
#   fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     default: 60 s, every target
#
# Environment:
#   FUZZ_RUNS=N        also stop each target after N executions (-runs=N)
#   FUZZ_MAX_LEN=N     largest input for every target instead of each one's own (below)
#   FUZZ_BUILD_DIR=D   build directory (default: build-fuzz in the repository)
#   FUZZ_KEEP=1        keep the temporary corpora and logs (their path is printed)
#   FUZZ_EXTRA="..."   more libFuzzer flags for every target
#
# Crash inputs are written to $FUZZ_BUILD_DIR/artifacts/<target>/. Reproduce one with
#   build-fuzz/fuzz/fuzz_<target> FILE
# and minimise it with
#   build-fuzz/fuzz/fuzz_<target> -minimize_crash=1 -runs=100000 FILE
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
secs=${1:-60}
shift || true
all_targets=(dialoginfo dialoginfo_diff pidf reginfo rlmi config storecodec_jid router ctlcheck directory ctlproto sip)
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=("${all_targets[@]}")
fi
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}

case $secs in
  '' | *[!0-9]*) echo "run.sh: SECONDS_PER_TARGET must be a whole number, not '$secs'" >&2; exit 2 ;;
esac

# Largest input per target: a NOTIFY body may be up to [sip] max_body (64 KiB by default),
# and the parsers must reject anything larger, so the XML targets go a little past it.
max_len() {
  case $1 in
    dialoginfo | dialoginfo_diff | pidf | reginfo | rlmi) echo 70000 ;;
    config) echo 16384 ;;        # CFG_MAX_LINE is 4096: room for over-long lines
    storecodec_jid) echo 8192 ;; # JID_MAX is 3071
    directory) echo 16384 ;;     # DIR_MAX_JID is 1024; a few records of each limit
    router) echo 70000 ;;        # past [component] max_stanza (65536)
    ctlcheck) echo 20000 ;;      # past offhookctl's 16 KiB XMPP buffer
    ctlproto) echo 8192 ;;       # several request lines past CTL_LINE_MAX (1024)
    sip) echo 70000 ;;           # a datagram or several, past the largest UDP payload
    *) echo "run.sh: unknown target '$1'" >&2; return 1 ;;
  esac
}
for t in "${targets[@]}"; do max_len "$t" >/dev/null; done

# ---- tools ------------------------------------------------------------------------------
need=()
command -v clang >/dev/null 2>&1 || need+=(clang)
dpkg-query -W -f='${Status}' libclang-rt-14-dev 2>/dev/null | grep -q "install ok installed" ||
  need+=(libclang-rt-14-dev)
for p in cmake pkg-config make libstrophe-dev libsofia-sip-ua-dev libevent-dev libhiredis-dev \
         libldap2-dev \
         libxml2-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "run.sh: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# ---- build ------------------------------------------------------------------------------
if ! grep -q 'add_subdirectory(fuzz)' "$root/CMakeLists.txt"; then
  echo "run.sh: $root/CMakeLists.txt does not include fuzz/ yet: see docs/fuzzing.md" >&2
  exit 2
fi
cmake -S "$root" -B "$build" -DOFFHOOK_FUZZ=ON -DOFFHOOK_TESTS=OFF -DOFFHOOK_BENCH=OFF \
  -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; exit 2; }
rm -f "$build.configure.log"
cmake --build "$build" --target offhook_fuzzers -j"$(nproc)" >/dev/null ||
  { echo "run.sh: build failed (cmake --build $build --target offhook_fuzzers)" >&2; exit 2; }

# ---- run --------------------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/offhook-fuzz.XXXXXX")
if [ "${FUZZ_KEEP:-0}" != 1 ]; then
  trap 'rm -rf "$work"' EXIT
fi
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

failed=()
printf '%-15s %12s %8s %7s %7s %7s %6s  %s\n' target execs exec/s cov ft corpus secs result
for t in "${targets[@]}"; do
  bin=$build/fuzz/fuzz_$t
  corpus=$work/corpus-$t
  arts=$build/artifacts/$t
  log=$work/$t.log
  mkdir -p "$corpus" "$arts"
  cp -r "$root/fuzz/corpus/$t/." "$corpus/"
  chmod -R u+w "$corpus"
  args=(-max_total_time="$secs" -max_len="${FUZZ_MAX_LEN:-$(max_len "$t")}" -timeout=25 -rss_limit_mb=2048
        -print_final_stats=1 -artifact_prefix="$arts/")
  dict=$root/fuzz/${t%_diff}.dict # a differential target uses its parser's dictionary
  [ -f "$dict" ] && args+=(-dict="$dict")
  [ -n "${FUZZ_RUNS:-}" ] && args+=(-runs="$FUZZ_RUNS")
  # shellcheck disable=SC2206
  [ -n "${FUZZ_EXTRA:-}" ] && args+=($FUZZ_EXTRA)
  before=$(find "$arts" -type f | sort)
  start=$(date +%s)
  set +e
  (cd "$work" && "$bin" "${args[@]}" "$corpus" </dev/null >"$log" 2>&1)
  rc=$?
  set -e
  took=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -1 || true)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  corp=$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")
  new=$(comm -13 <(printf '%s\n' "$before") <(find "$arts" -type f | sort) | sed '/^$/d')
  result=ok
  if [ "$rc" -ne 0 ] || [ -n "$new" ]; then
    result="FAILED (exit $rc)"
    failed+=("$t")
  fi
  printf '%-15s %12s %8s %7s %7s %7s %6s  %s\n' "$t" "${execs:-?}" "${eps:-?}" "${cov:-?}" \
    "${ft:-?}" "${corp:-?}" "$took" "$result"
  if [ "$result" != ok ]; then
    grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|.*fuzz invariant failed|ALARM|==[0-9]+== ERROR)' \
      "$log" | head -5 | sed 's/^/    /'
    for f in $new; do echo "    crash input: $f"; done
    cp "$log" "$arts/$t-$(date +%Y%m%d-%H%M%S).log"
    echo "    log: $(ls -t "$arts"/*.log | head -1)"
  fi
done
[ "${FUZZ_KEEP:-0}" = 1 ] && echo "corpora and logs kept in $work"
if [ ${#failed[@]} -gt 0 ]; then
  echo "run.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "run.sh: all ${#targets[@]} targets ran ${secs}s${FUZZ_RUNS:+ (or $FUZZ_RUNS runs)} each without a finding"
