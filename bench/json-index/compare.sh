#!/usr/bin/env bash
# Issue 19's comparison of the body index with maintained JSON crates, in one command:
#   bench/json-index/compare.sh            # check, callgrind, peak memory, then criterion (~10 min)
#   BENCH=0 bench/json-index/compare.sh    # without criterion
# Prints markdown tables. Needs valgrind (Debian: `apt-get install valgrind`).
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"
cargo build --release --bins --quiet
bin=target/release
[ -n "${CARGO_TARGET_DIR:-}" ] && bin="$CARGO_TARGET_DIR/release"

echo "## Same reading as the index"
echo
"$bin/json-index-compare" check "${MUTATIONS:-20000}" || true
echo

candidates="index serde_json sonic_rs sonic_rs_unchecked simd_json"
reviews="small-allow small-deny large deny-heavy"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Instructions of `run CANDIDATE REVIEW N` under callgrind.
ir() {
    valgrind --tool=callgrind --callgrind-out-file="$tmp/out" \
        "$bin/json-index-compare" run "$1" "$2" "$3" 2>/dev/null
    awk '/^summary:/ { print $2 }' "$tmp/out"
}

echo "## Instructions per review (callgrind: (Ir(N + 1) - Ir(1)) / N)"
echo
printf '| review | N | today'"'"'s admission::review |'
for c in $candidates; do printf ' %s |' "$c"; done
echo
printf '| --- | ---: | ---: |'
for c in $candidates; do printf ' ---: |'; done
echo
for r in $reviews; do
    case $r in small-*) n=200 ;; *) n=10 ;; esac
    printf '| %s | %s |' "$r" "$n"
    for c in review $candidates; do
        one=$(ir "$c" "$r" 1)
        many=$(ir "$c" "$r" $((n + 1)))
        awk -v a="$one" -v b="$many" -v n="$n" 'BEGIN { printf " %.1f k |", (b - a) / n / 1000 }'
    done
    echo
done
echo

echo "## Peak heap during one reading (bytes beyond the body; per body byte)"
echo
echo "| candidate | review | body bytes | peak bytes | per body byte |"
echo "| --- | --- | ---: | ---: | ---: |"
for c in $candidates; do
    for r in small-allow large; do
        "$bin/memory" "$c" "$r" | awk '{ printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5 }'
    done
done
echo

if [ "${BENCH:-1}" != 0 ]; then
    echo "## Criterion"
    cargo bench --quiet --bench json_index 2>/dev/null | grep -E '^[a-z-]+/|time:' || true
fi
