#!/usr/bin/env bash
# Runs one fuzz target under the CPU rules of this machine (one process, nice 19, own
# target dir), until RUNS executions, and prints libFuzzer's final stats.
#   fuzz/run.sh TARGET [RUNS] [MAX_LEN] [extra libFuzzer flags...]
set -euo pipefail
target=$1; runs=${2:-10000000}; max_len=${3:-4096}; shift $(( $# < 3 ? $# : 3 ))
here=$(cd "$(dirname "$0")" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/sluice-fuzz-target}
export CARGO_BUILD_JOBS=1 RUSTC_BOOTSTRAP=1
features=()
[ "${SLUICE_FUZZ_ENGINE:-0}" = 1 ] || features=(--no-default-features)
dict=()
case $target in
  event_body) dict=(-dict="$here/dict/event.dict") ;;
  config) dict=(-dict="$here/dict/config.dict") ;;
esac
corpus=("$here/corpus/$target")
mkdir -p "$here/corpus/$target"
[ -d "$here/seeds/$target" ] && corpus+=("$here/seeds/$target")
exec nice -n 19 cargo fuzz run --fuzz-dir "$here" -s none -O -a "${features[@]}" "$target" "${corpus[@]}" -- \
  -runs="$runs" -max_len="$max_len" -print_final_stats=1 "${dict[@]}" "$@"
