#!/usr/bin/env bash
# Load benchmark: pytorchjob-guard beside a constant-answer server on the same TLS/HTTP stack.
#
#   bench/load.sh                      # builds release, runs everything (~2.5 min after the builds)
#   DURATION=3 bench/load.sh           # quicker, noisier
#   GUARD_BIN=/tmp/old/pytorchjob-guard bench/load.sh   # an already built webhook (before/after)
#
# Both servers run pinned to one core (SERVER_CPU, default 0) and are driven in turn by h2load
# (Debian's nghttp2-client, installed here when missing and running as root) pinned to another
# (CLIENT_CPU, default 1), over loopback only: 127.0.0.1, self-generated throwaway certificates.
# Each loaded run is CONNECTIONS (32) keep-alive connections, one request at a time on each, for
# WARMUP + DURATION seconds, over HTTP/1.1 (what the API server speaks) and HTTP/2; then an
# unloaded run per review (1 connection, 1 request at a time, HTTP/1.1). Reported: req/s, p50 and
# p99 latency (from h2load's per-request log), the server's CPU use, its peak RSS during the run
# (VmHWM, reset before each run), and the webhook / baseline throughput ratio against the targets
# of issue 7. The markdown tables go to stdout (and to $RESULTS when set); progress to stderr.
#
# Settings (environment): DURATION (8) WARMUP (1) UNLOADED_DURATION (3) CONNECTIONS (32)
# REVIEWS ("small-allow small-deny large"; also "deny-heavy") PROTOCOLS ("h1 h2")
# SERVER_CPU (0) CLIENT_CPU (1) GUARD_PORT (18443) METRICS_PORT (18490) BASELINE_PORT (18444)
# GUARD_BIN / BENCH_BIN (skip building that binary) RESULTS (file) KEEP=1 (keep the temp dir).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DURATION="${DURATION:-8}"
WARMUP="${WARMUP:-1}"
UNLOADED_DURATION="${UNLOADED_DURATION:-3}"
CONNECTIONS="${CONNECTIONS:-32}"
REVIEWS="${REVIEWS:-small-allow small-deny large}"
PROTOCOLS="${PROTOCOLS:-h1 h2}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
GUARD_PORT="${GUARD_PORT:-18443}"
METRICS_PORT="${METRICS_PORT:-18490}"
BASELINE_PORT="${BASELINE_PORT:-18444}"
RESULTS="${RESULTS:-}"

log() { printf '%s\n' "load.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# --- tools -----------------------------------------------------------------------------------
if ! command -v h2load >/dev/null; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
        log "installing h2load (nghttp2-client)"
        apt-get install -y -qq nghttp2-client >/dev/null 2>&1 ||
            { apt-get update -qq >/dev/null && apt-get install -y -qq nghttp2-client >/dev/null; }
    fi
    command -v h2load >/dev/null || die "h2load is missing: apt-get install nghttp2-client"
fi
command -v taskset >/dev/null || die "taskset is missing (util-linux)"
if (($(nproc) < 2)); then
    log "only $(nproc) CPU: client and server share CPU $SERVER_CPU, numbers are not comparable"
    CLIENT_CPU="$SERVER_CPU"
fi

# --- build -----------------------------------------------------------------------------------
GUARD_BUILT=""
if [[ -z "${GUARD_BIN:-}" ]]; then
    GUARD_BUILT=1
    log "building pytorchjob-guard (release)"
    cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin pytorchjob-guard
    GUARD_BIN="$ROOT/target/release/pytorchjob-guard"
fi
if [[ -z "${BENCH_BIN:-}" ]]; then
    log "building the baseline server (bench/, release)"
    cargo build --release --quiet --manifest-path "$ROOT/bench/Cargo.toml"
    BENCH_BIN="$ROOT/bench/target/release/guard-bench"
fi

# --- inputs ----------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/guard-load.XXXXXX")"
GUARD_PID=""
BASELINE_PID=""
cleanup() {
    for pid in $GUARD_PID $BASELINE_PID; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ "${KEEP:-0}" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

"$GUARD_BIN" certs --out "$WORK/certs" >/dev/null
"$BENCH_BIN" reviews --out "$WORK/reviews" >"$WORK/sizes"
declare -A SIZE
while read -r name bytes; do SIZE[$name]=$bytes; done <"$WORK/sizes"
for review in $REVIEWS; do
    [[ -n "${SIZE[$review]:-}" ]] || die "unknown review $review (have: ${!SIZE[*]})"
    # The webhook must give each review the verdict its name promises, else we measure nonsense.
    answer="$("$GUARD_BIN" review "$WORK/reviews/$review.json")"
    case "$review" in
        small-allow | large) want='"allowed":true' ;;
        *) want='"allowed":false' ;;
    esac
    [[ "$answer" == *"$want"* ]] || die "$review: expected $want from the webhook"
done

# --- servers ---------------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
    for _ in $(seq 100); do port_open "$1" && return 0; sleep 0.1; done
    die "nothing listens on 127.0.0.1:$1; see $WORK/*.log (KEEP=1 keeps them)"
}
for port in "$GUARD_PORT" "$METRICS_PORT" "$BASELINE_PORT"; do
    ! port_open "$port" || die "127.0.0.1:$port is in use: set GUARD_PORT / METRICS_PORT / BASELINE_PORT"
done

taskset -c "$SERVER_CPU" "$GUARD_BIN" serve \
    --listen "127.0.0.1:$GUARD_PORT" --metrics-listen "127.0.0.1:$METRICS_PORT" \
    --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" \
    --log-level warn --shutdown-delay 0s >"$WORK/guard.log" 2>&1 &
GUARD_PID=$!
taskset -c "$SERVER_CPU" "$BENCH_BIN" baseline --listen "127.0.0.1:$BASELINE_PORT" \
    --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" >"$WORK/baseline.log" 2>&1 &
BASELINE_PID=$!
wait_port "$GUARD_PORT"
wait_port "$BASELINE_PORT"

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- measuring -------------------------------------------------------------------------------
TICKS="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_rss_mib() { awk '/^VmHWM:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }
reset_peak() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || log "cannot reset VmHWM of $1: peaks are since start"; }

# Nearest-rank percentiles (ms) of h2load's per-request log (start µs, status, duration µs; only
# the requests of the measured phase, not of the warm-up).
percentiles() {
    cut -f3 "$1" | sort -n |
        awk '{d[NR] = $1} END {
            if (NR == 0) { print "- -"; exit }
            split("0.5 0.99", q, " ")
            for (i = 1; i <= 2; i++) { k = int(q[i] * NR); if (k < q[i] * NR) k++; if (k < 1) k = 1
                printf "%.3f ", d[k] / 1000 }
            print ""
        }'
}

# Busy (user, nice, system, steal: not interrupts, where loopback traffic is accounted) and
# total ticks of one CPU (/proc/stat), to see what other processes took from it.
cpu_busy() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
others() { # BUSY0 TOTAL0 BUSY1 TOTAL1 OURS → percent of the CPU used by anything but OURS
    awk -v b="$(($3 - $1))" -v t="$(($4 - $2))" -v o="$5" 'BEGIN {v = t > 0 ? 100 * (b - o) / t : 0; printf "%.0f", v < 0 ? 0 : v}'
}

# run SERVER PID PORT PROTO REVIEW CONNECTIONS SECONDS → sets R_RPS R_P50 R_P99, R_CPU (server
# CPU %), R_US (server CPU µs per request), R_CLIENT (h2load CPU %), R_RSS, R_OK and R_NOISE
# (percent of the server's / client's core taken by other processes)
run() {
    local server=$1 pid=$2 port=$3 proto=$4 review=$5 conns=$6 seconds=$7
    local tag="$server-$proto-$review-c$conns"
    local out="$WORK/$tag.out" requests="$WORK/$tag.log" flags=()
    [[ "$proto" == h1 ]] && flags+=(--h1)
    reset_peak "$pid"
    local before s0 c0 s1 c1
    before="$(cpu_ticks "$pid")"
    s0="$(cpu_busy "$SERVER_CPU")"
    c0="$(cpu_busy "$CLIENT_CPU")"
    local TIMEFORMAT='%U %S %R'
    { time taskset -c "$CLIENT_CPU" h2load "${flags[@]}" -c "$conns" -m 1 -D "$seconds" \
        --warm-up-time "$WARMUP" -d "$WORK/reviews/$review.json" \
        -H 'content-type: application/json' --log-file "$requests" \
        "https://127.0.0.1:$port/validate?timeout=10s" >"$out" 2>&1; } 2>"$WORK/$tag.time"
    local after wall
    after="$(cpu_ticks "$pid")"
    s1="$(cpu_busy "$SERVER_CPU")"
    c1="$(cpu_busy "$CLIENT_CPU")"
    read -r user sys wall <"$WORK/$tag.time"
    R_RPS="$(awk '/^finished in/ {printf "%.0f", $4}' "$out")"
    read -r R_P50 R_P99 < <(percentiles "$requests")
    R_CPU="$(awk -v t="$((after - before))" -v hz="$TICKS" -v w="$wall" 'BEGIN {printf "%.0f", 100 * t / hz / w}')"
    R_US="$(awk -v t="$((after - before))" -v hz="$TICKS" -v w="$wall" -v r="${R_RPS:-0}" 'BEGIN {if (r > 0) printf "%.0f", 1e6 * t / hz / w / r; else print "-"}')"
    R_CLIENT="$(awk -v u="$user" -v s="$sys" -v w="$wall" 'BEGIN {printf "%.0f", 100 * (u + s) / w}')"
    R_RSS="$(peak_rss_mib "$pid")"
    local client_ticks
    client_ticks="$(awk -v u="$user" -v s="$sys" -v hz="$TICKS" 'BEGIN {printf "%.0f", (u + s) * hz}')"
    # shellcheck disable=SC2086 # word splitting of "busy total" is intended
    R_NOISE="$(others $s0 $s1 "$((after - before))") / $(others $c0 $c1 "$client_ticks")"
    # Every response must be a 2xx and no request may fail.
    R_OK=yes
    grep -Eq '^status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx' "$out" &&
        grep -Eq ' 0 failed, 0 errored, 0 timeout' "$out" || R_OK=no
    [[ "$R_OK" == yes && -n "$R_RPS" ]] ||
        log "$tag: errors or no result (see $out; KEEP=1 keeps it): $(grep -E '^(requests|status codes):' "$out" | tr '\n' ' ')"
    log "$tag: ${R_RPS:-?} req/s, p50 $R_P50 ms, p99 $R_P99 ms, server CPU $R_CPU% ($R_US µs/req), h2load CPU $R_CLIENT%, peak RSS $R_RSS MiB, others on server / client core $R_NOISE %"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "-"}'; }
meets() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN {ok = (op == ">=") ? v >= t : v < t; print ok ? "yes" : "**no**"}'; }
kb() { awk -v b="$1" 'BEGIN {printf "%.1f KB", b / 1000}'; }

LOADED=()
UNLOADED=()
PEAK_RSS=0
for review in $REVIEWS; do
    case "$review" in large | deny-heavy) target=0.5 p99_target=2 ;; *) target=0.7 p99_target=0.2 ;; esac
    for proto in $PROTOCOLS; do
        run guard "$GUARD_PID" "$GUARD_PORT" "$proto" "$review" "$CONNECTIONS" "$DURATION"
        g=("$R_RPS" "$R_P50" "$R_P99" "$R_CPU" "$R_CLIENT" "$R_RSS" "$R_OK" "$R_NOISE" "$R_US")
        run baseline "$BASELINE_PID" "$BASELINE_PORT" "$proto" "$review" "$CONNECTIONS" "$DURATION"
        b=("$R_RPS" "$R_P50" "$R_P99" "$R_CPU" "$R_CLIENT" "$R_RSS" "$R_OK" "$R_NOISE" "$R_US")
        r="$(ratio "${g[0]}" "${b[0]}")"
        ok=""
        [[ "${g[6]}" == yes && "${b[6]}" == yes ]] || ok=" (errors!)"
        LOADED+=("| $review | $(kb "${SIZE[$review]}") | ${proto/h1/HTTP\/1.1} | ${g[0]} | ${b[0]} | **$r**$ok | ≥ $target: $(meets "$r" "$target" ">=") | ${g[1]} / ${g[2]} | ${b[1]} / ${b[2]} | ${g[3]} / ${b[3]} | ${g[8]} / ${b[8]} | $(ratio "${b[8]}" "${g[8]}") | ${g[4]} / ${b[4]} | ${g[5]} / ${b[5]} | ${g[7]}; ${b[7]} |")
        PEAK_RSS="$(awk -v a="$PEAK_RSS" -v b="${g[5]}" 'BEGIN {print (b > a) ? b : a}')"
    done
    run guard "$GUARD_PID" "$GUARD_PORT" h1 "$review" 1 "$UNLOADED_DURATION"
    g=("$R_RPS" "$R_P50" "$R_P99" "$R_NOISE")
    run baseline "$BASELINE_PID" "$BASELINE_PORT" h1 "$review" 1 "$UNLOADED_DURATION"
    b=("$R_RPS" "$R_P50" "$R_P99" "$R_NOISE")
    UNLOADED+=("| $review | $(kb "${SIZE[$review]}") | ${g[0]} | ${b[0]} | ${g[1]} / **${g[2]}** | ${b[1]} / ${b[2]} | < $p99_target: $(meets "${g[2]}" "$p99_target" "<") | ${g[3]}; ${b[3]} |")
done

# --- report ----------------------------------------------------------------------------------
if [[ -n "$GUARD_BUILT" ]]; then
    webhook="webhook built from $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "an unknown commit")"
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || webhook+=" with uncommitted changes"
else
    webhook="webhook $GUARD_BIN (prebuilt)"
fi
cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
{
    echo "### Load benchmark, $(date -u +%Y-%m-%d)"
    echo
    echo "$cpu, $(nproc) CPUs, Linux $(uname -r); $webhook."
    echo "Servers pinned to CPU $SERVER_CPU, $(h2load --version | head -1) pinned to CPU $CLIENT_CPU, loopback TLS ($(grep -m1 -o 'TLSv[0-9.]*' "$WORK"/guard-h*.out 2>/dev/null | head -1 | cut -d: -f2 || true)$(awk -F'Cipher: ' '/Cipher:/ {print ", " $2; exit}' "$WORK"/guard-*.out))."
    echo "Load average before / after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg). \"Others' CPU\" is what other processes took from the server's and h2load's cores during each run: above a few percent, the run was disturbed."
    echo "Loaded: $CONNECTIONS keep-alive connections, 1 request at a time each, ${WARMUP}s warm-up + ${DURATION}s per run."
    echo
    echo "| review | size | HTTP | guard req/s | baseline req/s | ratio | target | guard p50 / p99 ms | baseline p50 / p99 ms | server CPU % guard / baseline | server CPU µs/req guard / baseline | CPU cost ratio | h2load CPU % guard / baseline | peak RSS MiB guard / baseline | others' CPU % server / client core: guard; baseline run |"
    echo "| --- | --- | --- | ---: | ---: | ---: | --- | --- | --- | --- | --- | ---: | --- | --- | --- |"
    printf '%s\n' "${LOADED[@]}"
    echo
    echo "Peak RSS of the webhook under load: $PEAK_RSS MiB (target < 40 MiB: $(meets "$PEAK_RSS" 40 "<"))."
    echo "CPU cost ratio = baseline CPU per request / guard CPU per request: the throughput ratio both would reach if each saturated its core (robust when a run is client-bound or disturbed)."
    echo
    echo "Unloaded: 1 connection, 1 request at a time, HTTP/1.1, ${WARMUP}s warm-up + ${UNLOADED_DURATION}s."
    echo
    echo "| review | size | guard req/s | baseline req/s | guard p50 / p99 ms | baseline p50 / p99 ms | guard p99 target (ms) | others' CPU % server / client core: guard; baseline run |"
    echo "| --- | --- | ---: | ---: | --- | --- | --- | --- |"
    printf '%s\n' "${UNLOADED[@]}"
} | tee ${RESULTS:+"$RESULTS"}
