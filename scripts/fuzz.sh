#!/usr/bin/env bash
# Fuzzing the device models (fuzz/ is its own cargo-fuzz workspace).
#
#   scripts/fuzz.sh build               build every target
#   scripts/fuzz.sh replay              build, then run every target over its
#                                       committed corpus once (what CI does)
#   scripts/fuzz.sh run TARGET SECONDS  fuzz one target, growing its corpus
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

targets() { cargo +nightly fuzz list; }

case "${1:-}" in
  build)
    cargo +nightly fuzz build
    ;;
  replay)
    cargo +nightly fuzz build
    for target in $(targets); do
      corpus="corpus/$target"
      [ -d "$corpus" ] || { echo "no corpus for $target (commit seeds in fuzz/$corpus)" >&2; exit 1; }
      echo "replaying $(ls "$corpus" | wc -l) inputs of $target"
      cargo +nightly fuzz run "$target" "$corpus" -- -runs=0
    done
    ;;
  run)
    target=${2:?target}
    seconds=${3:?seconds}
    mkdir -p "corpus/$target"
    cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=2048
    ;;
  *)
    echo "usage: $0 build | replay | run TARGET SECONDS" >&2
    exit 2
    ;;
esac
