#!/usr/bin/env bash
# Load benchmark: pytorchjob-guard, run as shipped, beside a constant-answer server on the same
# TLS/HTTP stack, with issue 13's targets.
#
#   bench/load.sh                      # builds release, runs everything (~3.5 min after the builds)
#   RESULTS=file bench/load.sh         # also writes the markdown report to file
#   LOGS=warn bench/load.sh            # the same with --log-level warn (decision log off), to compare
#   DURATION=3 bench/load.sh           # quicker, noisier
#   GUARD_BIN=/tmp/old/pytorchjob-guard bench/load.sh   # an already built webhook
#   BEFORE=25c0462 bench/load.sh       # before/after: that commit's webhook, with its own shipped
#                                      # args and policy, beside this one, alternating per row
#
# The webhook runs with the Deployment's own args, read from manifests/base/deployment.yaml
# (today --tls-cert, --tls-key, --log-format=json, --policy: default log level, so one JSON
# decision line per review), with only the paths and listen addresses adapted: throwaway
# certificates, --policy manifests/base/policy.yaml (the ConfigMap's content), 127.0.0.1 ports.
# PYTORCHJOB_GUARD_* and RUST_LOG are removed from its environment. Its stderr goes to a file, as
# a container runtime captures it; afterwards the decision lines in it are counted against the
# reviews it answered (pytorchjob_guard_reviews_total) and, when the metric exists,
# pytorchjob_guard_log_lines_dropped_total is printed. LOGS=warn adds --log-level warn.
#
# Both servers run pinned to one core (SERVER_CPU, default 0) and are driven in turn by h2load
# (Debian's nghttp2-client, installed here when missing and running as root) pinned to another
# (CLIENT_CPU, default 1), over loopback only: 127.0.0.1. Each loaded run is CONNECTIONS (32)
# keep-alive connections, one request at a time on each, for WARMUP + DURATION seconds, over
# HTTP/1.1 (what the API server speaks) and HTTP/2; then an unloaded run per review and server
# (1 connection, 1 request at a time, HTTP/1.1, WARMUP + UNLOADED_DURATION seconds). Reported:
# req/s, p50 and p99 latency (from h2load's per-request log), the server's CPU use and CPU µs per
# request, its peak RSS during the run (VmHWM, reset before each run), the webhook / baseline
# throughput ratio and the unloaded p99 difference, each against issue 13's target (met or not,
# compared unrounded; ratios are printed truncated, never rounded up), the deny-heavy review
# beside the large one, and the decision-log count. The markdown report goes to stdout (and to
# $RESULTS when set); progress to stderr. The script stops by itself and stops its servers.
#
# With BEFORE=REV, a second webhook runs beside the first: REV's, built in a worktree under the
# temp dir (or BEFORE_BIN, already built from REV), with REV's Deployment args and policy
# (`git show REV:manifests/base/…`). Each loaded row then runs ROUNDS (default 3) times on both,
# alternating which goes first, and a third table gives each round's CPU µs per request, the
# medians and after / before against issue 19's target (CPU per request within 10% of before):
# the two are compared seconds apart, under the same disturbances, which a comparison of two
# separate runs of this script is not (the same binary moves by ±20% between runs on a shared VM).
#
# Targets (issue 13), against the constant-answer server in the same run:
#   HTTP/1.1, 32 connections: small-allow, small-deny ≥ 0.7× its req/s; large ≥ 0.5×.
#   HTTP/2: small-allow, small-deny ≥ 0.6×. (HTTP/2 large and deny-heavy: no target.)
#   Unloaded p99: ≤ the baseline's + 0.05 ms small-allow, small-deny; + 1 ms large.
#   Webhook peak RSS under load < 40 MiB, every row and overall.
#
# Settings (environment): LOGS (shipped | warn) DURATION (8) WARMUP (1) UNLOADED_DURATION (3)
# CONNECTIONS (32) REVIEWS ("small-allow small-deny large deny-heavy") PROTOCOLS ("h1 h2")
# SERVER_CPU (0) CLIENT_CPU (1) GUARD_PORT (18443) METRICS_PORT (18490) BASELINE_PORT (18444)
# GUARD_BIN / BENCH_BIN (skip building that binary) CARGO_TARGET_DIR (where builds go)
# BEFORE (a git revision) BEFORE_BIN ROUNDS (3) BEFORE_PORT (18445) BEFORE_METRICS_PORT (18491)
# RESULTS (file) KEEP=1 (keep the temp dir with the logs).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOGS="${LOGS:-shipped}"
DURATION="${DURATION:-8}"
WARMUP="${WARMUP:-1}"
UNLOADED_DURATION="${UNLOADED_DURATION:-3}"
CONNECTIONS="${CONNECTIONS:-32}"
REVIEWS="${REVIEWS:-small-allow small-deny large deny-heavy}"
PROTOCOLS="${PROTOCOLS:-h1 h2}"
SERVER_CPU="${SERVER_CPU:-0}"
CLIENT_CPU="${CLIENT_CPU:-1}"
GUARD_PORT="${GUARD_PORT:-18443}"
METRICS_PORT="${METRICS_PORT:-18490}"
BASELINE_PORT="${BASELINE_PORT:-18444}"
RESULTS="${RESULTS:-}"
BEFORE="${BEFORE:-}"
ROUNDS="${ROUNDS:-3}"
BEFORE_PORT="${BEFORE_PORT:-18445}"
BEFORE_METRICS_PORT="${BEFORE_METRICS_PORT:-18491}"
DEPLOYMENT="$ROOT/manifests/base/deployment.yaml"
POLICY="$ROOT/manifests/base/policy.yaml"

log() { printf '%s\n' "load.sh: $*" >&2; }
die() { log "$*"; exit 1; }

case "$LOGS" in shipped | warn) ;; *) die "LOGS is shipped (the default) or warn, not $LOGS" ;; esac
for proto in $PROTOCOLS; do
    case "$proto" in h1 | h2) ;; *) die "PROTOCOLS holds h1 and/or h2, not $proto" ;; esac
done
[[ -f "$DEPLOYMENT" && -f "$POLICY" ]] || die "missing $DEPLOYMENT or $POLICY"

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
    GUARD_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/pytorchjob-guard"
fi
if [[ -z "${BENCH_BIN:-}" ]]; then
    log "building the baseline server (bench/, release)"
    cargo build --release --quiet --manifest-path "$ROOT/bench/Cargo.toml"
    BENCH_BIN="${CARGO_TARGET_DIR:-$ROOT/bench/target}/release/guard-bench"
fi
[[ -x "$GUARD_BIN" && -x "$BENCH_BIN" ]] || die "not executable: $GUARD_BIN or $BENCH_BIN"

# --- inputs ----------------------------------------------------------------------------------
WORK="$(mktemp -d "${TMPDIR:-/tmp}/guard-load.XXXXXX")"
GUARD_PID=""
BASELINE_PID=""
stop() { # PID: SIGTERM, up to 10 s (the guard keeps serving for its default 5 s --shutdown-delay), then SIGKILL
    local pid=$1
    kill "$pid" 2>/dev/null || return 0
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
BEFORE_PID=""
BEFORE_TREE=""
cleanup() {
    for pid in $GUARD_PID $BASELINE_PID $BEFORE_PID; do stop "$pid"; done
    [[ -z "$BEFORE_TREE" ]] || git -C "$ROOT" worktree remove --force "$BEFORE_TREE" 2>/dev/null || true
    if [[ "${KEEP:-0}" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# guard_args DEPLOYMENT POLICY PORT METRICS_PORT → ARGS: the container's args in the Deployment
# (the `- ` items under `args:`, up to the next key), with the paths and addresses adapted.
guard_args() {
    local deployment=$1 policy=$2 port=$3 metrics_port=$4 shipped arg have_cert="" have_key=""
    mapfile -t shipped < <(awk '
        /^ *args: *$/ { inside = 1; indent = -1; next }
        inside && /^ *- / { match($0, /^ */); if (indent < 0) indent = RLENGTH
            if (RLENGTH == indent) { sub(/^ *- */, ""); gsub(/^"|"$/, ""); print; next } }
        inside && /^ *[^ #-]/ { exit }' "$deployment")
    ARGS=(serve --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics_port")
    for arg in "${shipped[@]}"; do
        case "$arg" in
            --tls-cert=*) ARGS+=("--tls-cert=$WORK/certs/tls.crt") have_cert=1 ;;
            --tls-key=*) ARGS+=("--tls-key=$WORK/certs/tls.key") have_key=1 ;;
            --policy=*) ARGS+=("--policy=$policy") ;;
            --listen* | --metrics-listen*) die "$deployment sets $arg: adapt bench/load.sh" ;;
            --*=/*) die "$deployment's $arg names a path bench/load.sh does not adapt" ;;
            *) ARGS+=("$arg") ;;
        esac
    done
    [[ -n "$have_cert" && -n "$have_key" ]] ||
        die "no --tls-cert= / --tls-key= among $deployment's args (${shipped[*]:-none}): adapt bench/load.sh"
    [[ "$LOGS" == warn ]] && ARGS+=(--log-level warn)
    return 0
}
guard_args "$DEPLOYMENT" "$POLICY" "$GUARD_PORT" "$METRICS_PORT"
GUARD_ARGS=("${ARGS[@]}")
if [[ -n "$BEFORE" ]]; then
    git -C "$ROOT" show "$BEFORE:manifests/base/deployment.yaml" >"$WORK/before-deployment.yaml" ||
        die "BEFORE=$BEFORE: no manifests/base/deployment.yaml at that revision"
    git -C "$ROOT" show "$BEFORE:manifests/base/policy.yaml" >"$WORK/before-policy.yaml" ||
        die "BEFORE=$BEFORE: no manifests/base/policy.yaml at that revision"
    guard_args "$WORK/before-deployment.yaml" "$WORK/before-policy.yaml" "$BEFORE_PORT" "$BEFORE_METRICS_PORT"
    BEFORE_ARGS=("${ARGS[@]}")
    if [[ -z "${BEFORE_BIN:-}" ]]; then
        log "building pytorchjob-guard at $BEFORE (release, in a worktree under $WORK)"
        git -C "$ROOT" worktree add --quiet --detach "$WORK/before-tree" "$BEFORE"
        BEFORE_TREE="$WORK/before-tree"
        cargo build --release --quiet --manifest-path "$WORK/before-tree/Cargo.toml" --bin pytorchjob-guard \
            --target-dir "$WORK/before-target"
        BEFORE_BIN="$WORK/before-target/release/pytorchjob-guard"
    fi
    [[ -x "$BEFORE_BIN" ]] || die "not executable: $BEFORE_BIN"
fi
# What the guard's log level and format depend on besides its flags.
CLEAN_ENV=(-u RUST_LOG)
while read -r name; do CLEAN_ENV+=(-u "$name"); done < <(compgen -e | grep '^PYTORCHJOB_GUARD_' || true)

"$GUARD_BIN" certs --out "$WORK/certs" >/dev/null
"$BENCH_BIN" reviews --out "$WORK/reviews" >"$WORK/sizes"
declare -A SIZE
while read -r name bytes; do SIZE[$name]=$bytes; done <"$WORK/sizes"
for review in $REVIEWS; do
    [[ -n "${SIZE[$review]:-}" ]] || die "unknown review $review (have: ${!SIZE[*]})"
    # The webhook must give each review the verdict its name promises, else we measure nonsense.
    case "$review" in
        small-allow | large) want='"allowed":true' ;;
        small-deny | deny-heavy) want='"allowed":false' ;;
        *) die "$review: no expected verdict known to bench/load.sh" ;;
    esac
    answer="$(env "${CLEAN_ENV[@]}" "$GUARD_BIN" review --policy "$POLICY" "$WORK/reviews/$review.json")"
    [[ "$answer" == *"$want"* ]] || die "$review: expected $want from the webhook"
    if [[ -n "$BEFORE" ]]; then
        answer="$(env "${CLEAN_ENV[@]}" "$BEFORE_BIN" review --policy "$WORK/before-policy.yaml" "$WORK/reviews/$review.json")"
        [[ "$answer" == *"$want"* ]] || die "$review: expected $want from the webhook at $BEFORE"
    fi
done

# --- servers ---------------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {
    for _ in $(seq 100); do port_open "$1" && return 0; sleep 0.1; done
    die "nothing listens on 127.0.0.1:$1; see $WORK/*.log (KEEP=1 keeps them)"
}
for port in "$GUARD_PORT" "$METRICS_PORT" "$BASELINE_PORT" ${BEFORE:+"$BEFORE_PORT" "$BEFORE_METRICS_PORT"}; do
    ! port_open "$port" || die "127.0.0.1:$port is in use: set GUARD_PORT / METRICS_PORT / BASELINE_PORT (/ BEFORE_PORT / BEFORE_METRICS_PORT)"
done

log "guard: ${GUARD_ARGS[*]}"
env "${CLEAN_ENV[@]}" taskset -c "$SERVER_CPU" "$GUARD_BIN" "${GUARD_ARGS[@]}" \
    >"$WORK/guard.stdout" 2>"$WORK/guard.log" &
GUARD_PID=$!
taskset -c "$SERVER_CPU" "$BENCH_BIN" baseline --listen "127.0.0.1:$BASELINE_PORT" \
    --tls-cert "$WORK/certs/tls.crt" --tls-key "$WORK/certs/tls.key" >"$WORK/baseline.log" 2>&1 &
BASELINE_PID=$!
wait_port "$GUARD_PORT"
wait_port "$METRICS_PORT"
wait_port "$BASELINE_PORT"
if [[ -n "$BEFORE" ]]; then
    log "before ($BEFORE): ${BEFORE_ARGS[*]}"
    env "${CLEAN_ENV[@]}" taskset -c "$SERVER_CPU" "$BEFORE_BIN" "${BEFORE_ARGS[@]}" \
        >"$WORK/before.stdout" 2>"$WORK/before.log" &
    BEFORE_PID=$!
    wait_port "$BEFORE_PORT"
fi

LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"

# --- measuring -------------------------------------------------------------------------------
TICKS="$(getconf CLK_TCK)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
peak_rss_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
reset_peak() { echo 5 >"/proc/$1/clear_refs" 2>/dev/null || log "cannot reset VmHWM of $1: peaks are since start"; }
# KiB → MiB, truncated to 0.1 (so 40959 KiB reads 39.9, never 40.0)
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", int(10 * k / 1024) / 10}'; }

# Nearest-rank p50 and p99 in µs of h2load's per-request log (start µs, status, duration µs; only
# the requests of the measured phase, not of the warm-up).
percentiles() {
    cut -f3 "$1" | sort -n |
        awk '{d[NR] = $1} END {
            if (NR == 0) { print "- -"; exit }
            split("0.5 0.99", q, " ")
            for (i = 1; i <= 2; i++) { k = int(q[i] * NR); if (k < q[i] * NR) k++; if (k < 1) k = 1
                printf "%d ", d[k] }
            print ""
        }'
}
ms() { [[ "$1" == - ]] && { echo -; return; }; awk -v u="$1" 'BEGIN {printf "%.3f", u / 1000}'; }

# Busy (user, nice, system, steal: not interrupts, where loopback traffic is accounted) and
# total ticks of one CPU (/proc/stat), to see what other processes took from it.
cpu_busy() { awk -v c="cpu$1" '$1 == c {print $2 + $3 + $4 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }
others() { # BUSY0 TOTAL0 BUSY1 TOTAL1 OURS → percent of the CPU used by anything but OURS
    awk -v b="$(($3 - $1))" -v t="$(($4 - $2))" -v o="$5" 'BEGIN {v = t > 0 ? 100 * (b - o) / t : 0; printf "%.0f", v < 0 ? 0 : v}'
}

# run SERVER PID PORT PROTO REVIEW CONNECTIONS SECONDS → sets R_RPS (h2load's req/s, unrounded),
# R_P50 R_P99 (µs), R_CPU (server CPU %), R_US (server CPU µs per request), R_CLIENT (h2load
# CPU %), R_RSS (peak KiB), R_DONE (2xx answers counted by h2load), R_OK and R_NOISE (percent of
# the server's / client's core taken by other processes)
H2LOAD_DONE=0
run() {
    local server=$1 pid=$2 port=$3 proto=$4 review=$5 conns=$6 seconds=$7
    local tag="$server-$proto-$review-c$conns"
    local out="$WORK/$tag.out" requests="$WORK/$tag.log" flags=()
    [[ "$proto" == h1 ]] && flags+=(--h1)
    kill -0 "$pid" 2>/dev/null || die "the $server server (pid $pid) is gone; see $WORK/$server.log (KEEP=1 keeps it)"
    reset_peak "$pid"
    local before s0 c0 s1 c1
    before="$(cpu_ticks "$pid")"
    s0="$(cpu_busy "$SERVER_CPU")"
    c0="$(cpu_busy "$CLIENT_CPU")"
    local TIMEFORMAT='%U %S %R'
    { time timeout $((WARMUP + seconds + 60)) taskset -c "$CLIENT_CPU" h2load "${flags[@]}" \
        -c "$conns" -m 1 -D "$seconds" --warm-up-time "$WARMUP" -d "$WORK/reviews/$review.json" \
        -H 'content-type: application/json' --log-file "$requests" \
        "https://127.0.0.1:$port/validate?timeout=10s" >"$out" 2>&1 || true; } 2>"$WORK/$tag.time"
    local after wall user sys
    after="$(cpu_ticks "$pid")"
    s1="$(cpu_busy "$SERVER_CPU")"
    c1="$(cpu_busy "$CLIENT_CPU")"
    read -r user sys wall <"$WORK/$tag.time"
    R_RPS="$(awk '/^finished in/ {print $4; exit}' "$out")"
    R_RPS="${R_RPS:-0}"
    R_DONE="$(awk '/^status codes:/ {print $3; exit}' "$out")"
    R_DONE="${R_DONE:-0}"
    [[ "$server" == guard ]] && H2LOAD_DONE=$((H2LOAD_DONE + R_DONE))
    if [[ -s "$requests" ]]; then read -r R_P50 R_P99 < <(percentiles "$requests"); else R_P50=- R_P99=-; fi
    R_CPU="$(awk -v t="$((after - before))" -v hz="$TICKS" -v w="$wall" 'BEGIN {printf "%.0f", 100 * t / hz / w}')"
    R_US="$(awk -v t="$((after - before))" -v hz="$TICKS" -v w="$wall" -v r="$R_RPS" 'BEGIN {if (r > 0) printf "%.0f", 1e6 * t / hz / w / r; else print "-"}')"
    R_CLIENT="$(awk -v u="$user" -v s="$sys" -v w="$wall" 'BEGIN {printf "%.0f", 100 * (u + s) / w}')"
    R_RSS="$(peak_rss_kib "$pid")"
    local client_ticks
    client_ticks="$(awk -v u="$user" -v s="$sys" -v hz="$TICKS" 'BEGIN {printf "%.0f", (u + s) * hz}')"
    # shellcheck disable=SC2086 # word splitting of "busy total" is intended
    R_NOISE="$(others $s0 $s1 "$((after - before))") / $(others $c0 $c1 "$client_ticks")"
    # Every response must be a 2xx and no request may fail.
    R_OK=yes
    grep -Eq '^status codes: [0-9]+ 2xx, 0 3xx, 0 4xx, 0 5xx' "$out" &&
        grep -Eq ' 0 failed, 0 errored, 0 timeout' "$out" && [[ "$R_DONE" -gt 0 ]] || R_OK=no
    [[ "$R_OK" == yes ]] ||
        log "$tag: errors or no result (see $out; KEEP=1 keeps it): $(grep -E '^(requests|status codes):' "$out" | tr '\n' ' ')"
    log "$tag: $R_RPS req/s, p50 $(ms "$R_P50") ms, p99 $(ms "$R_P99") ms, server CPU $R_CPU% ($R_US µs/req), h2load CPU $R_CLIENT%, peak RSS $(mib "$R_RSS") MiB, others on server / client core $R_NOISE %"
}

# A / B truncated to 0.001 (a ratio is never shown above what it is)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.3f", int(1000 * a / b) / 1000; else print "-"}'; }
int() { awk -v v="$1" 'BEGIN {printf "%.0f", v}'; }
kb() { awk -v b="$1" 'BEGIN {printf "%.1f KB", b / 1000}'; }
MET=()
NOT_MET=()
verdict() { # NAME OK(1/0) → V="yes" / "**no**", and counts it (no subshell: the counts stay)
    if [[ "$2" == 1 ]]; then MET+=("$1"); V=yes; else NOT_MET+=("$1"); V="**no**"; fi
}
proto_name() { [[ "$1" == h1 ]] && echo HTTP/1.1 || echo HTTP/2; }

# compare_before PROTO REVIEW (after the guard's first run of the row, in R_US): ROUNDS rounds
# of the before webhook and this one, alternating which goes first; adds a row to COMPARED.
COMPARED=()
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{v[NR] = $1} END {if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
compare_before() {
    local proto=$1 review=$2 after="$R_US" before="" round ok=1 order server
    [[ "$R_OK" == yes ]] || ok=0
    # Round 1: this one (already run), then before; then before first in even rounds.
    for ((round = 1; round <= ROUNDS; round++)); do
        if ((round == 1)); then order=before; elif ((round % 2 == 0)); then order="before guard"; else order="guard before"; fi
        for server in $order; do
            if [[ "$server" == before ]]; then
                run before "$BEFORE_PID" "$BEFORE_PORT" "$proto" "$review" "$CONNECTIONS" "$DURATION"
                before+=" $R_US"
            else
                run guard "$GUARD_PID" "$GUARD_PORT" "$proto" "$review" "$CONNECTIONS" "$DURATION"
                after+=" $R_US"
            fi
            [[ "$R_OK" == yes ]] || ok=0
        done
    done
    local a b within cell
    a="$(median <<<"$after")"
    b="$(median <<<"$before")"
    within="$(awk -v a="$a" -v b="$b" 'BEGIN {print (b > 0 && a <= 1.1 * b) ? 1 : 0}')"
    ((ok)) || within=0
    verdict "CPU/req vs $BEFORE $review $(proto_name "$proto")" "$within"
    cell="≤ 1.10: $V$( ((ok)) || echo " (errors)")"
    COMPARED+=("| $review | $(proto_name "$proto") | ${before# } | $b | $after | $a | **$(ratio "$a" "$b")** | $cell |")
}

LOADED=()
UNLOADED=()
PEAK_RSS=0
declare -A US P50 UP50 UP99
for review in $REVIEWS; do
    case "$review" in small-allow | small-deny) p99_target=50 ;; large) p99_target=1000 ;; *) p99_target="" ;; esac
    for proto in $PROTOCOLS; do
        case "$proto/$review" in
            h1/small-allow | h1/small-deny) target=0.7 ;;
            h1/large) target=0.5 ;;
            h2/small-allow | h2/small-deny) target=0.6 ;;
            *) target="" ;;
        esac
        run guard "$GUARD_PID" "$GUARD_PORT" "$proto" "$review" "$CONNECTIONS" "$DURATION"
        g=("$R_RPS" "$R_P50" "$R_P99" "$R_CPU" "$R_CLIENT" "$R_RSS" "$R_OK" "$R_NOISE" "$R_US")
        [[ -z "$BEFORE" ]] || compare_before "$proto" "$review"
        run baseline "$BASELINE_PID" "$BASELINE_PORT" "$proto" "$review" "$CONNECTIONS" "$DURATION"
        b=("$R_RPS" "$R_P50" "$R_P99" "$R_CPU" "$R_CLIENT" "$R_RSS" "$R_OK" "$R_NOISE" "$R_US")
        US[$proto/$review]="${g[8]}"
        P50[$proto/$review]="${g[1]}"
        r="$(ratio "${g[0]}" "${b[0]}")"
        errors=""
        [[ "${g[6]}" == yes && "${b[6]}" == yes ]] || errors=" (errors!)"
        name="$review $(proto_name "$proto") ×$target"
        if [[ -z "$target" ]]; then
            tcell="none"
        elif [[ -n "$errors" ]]; then
            verdict "$name" 0
            tcell="≥ $target: $V (errors)"
        else
            verdict "$name" "$(awk -v a="${g[0]}" -v b="${b[0]}" -v t="$target" 'BEGIN {print (b > 0 && a >= t * b) ? 1 : 0}')"
            tcell="≥ $target: $V"
        fi
        verdict "RSS $review $(proto_name "$proto")" $((g[5] < 40960 ? 1 : 0))
        rss_cell="< 40: $V"
        LOADED+=("| $review | $(kb "${SIZE[$review]}") | $(proto_name "$proto") | $(int "${g[0]}") | $(int "${b[0]}") | **$r**$errors | $tcell | $(ms "${g[1]}") / $(ms "${g[2]}") | $(ms "${b[1]}") / $(ms "${b[2]}") | ${g[3]} / ${b[3]} | ${g[8]} / ${b[8]} | $(ratio "${b[8]}" "${g[8]}") | ${g[4]} / ${b[4]} | $(mib "${g[5]}") / $(mib "${b[5]}") | $rss_cell | ${g[7]}; ${b[7]} |")
        if ((g[5] > PEAK_RSS)); then PEAK_RSS=${g[5]}; fi
    done
    run guard "$GUARD_PID" "$GUARD_PORT" h1 "$review" 1 "$UNLOADED_DURATION"
    g=("$R_RPS" "$R_P50" "$R_P99" "$R_NOISE" "$R_OK")
    run baseline "$BASELINE_PID" "$BASELINE_PORT" h1 "$review" 1 "$UNLOADED_DURATION"
    b=("$R_RPS" "$R_P50" "$R_P99" "$R_NOISE" "$R_OK")
    UP50[$review]="${g[1]}"
    UP99[$review]="${g[2]}"
    delta=- tcell=none ok=0 errors=""
    [[ "${g[4]}" == yes && "${b[4]}" == yes ]] || errors=" (errors)"
    if [[ "${g[2]}" != - && "${b[2]}" != - ]]; then
        delta="$(awk -v d="$((g[2] - b[2]))" 'BEGIN {printf "%+.3f", d / 1000}')"
        if [[ -n "$p99_target" && -z "$errors" ]] && ((g[2] - b[2] <= p99_target)); then ok=1; fi
    fi
    if [[ -n "$p99_target" ]]; then
        verdict "unloaded p99 $review" "$ok"
        tcell="≤ +$(ms "$p99_target"): $V$errors"
    fi
    UNLOADED+=("| $review | $(kb "${SIZE[$review]}") | $(int "${g[0]}") | $(int "${b[0]}") | $(ms "${g[1]}") / **$(ms "${g[2]}")** | $(ms "${b[1]}") / $(ms "${b[2]}") | **$delta** | $tcell | ${g[3]}; ${b[3]} |")
done

# --- the decision log ------------------------------------------------------------------------
metrics_text="$(curl -s --max-time 5 "http://127.0.0.1:$METRICS_PORT/metrics" || true)"
metric_sum() { printf '%s\n' "$metrics_text" | awk -v m="$1" '$1 == m || index($1, m "{") == 1 {s += $NF; n++} END {if (n) printf "%.0f", s; else print "-"}'; }
REVIEWS_ANSWERED="$(metric_sum pytorchjob_guard_reviews_total)"
LINES_DROPPED="$(metric_sum pytorchjob_guard_log_lines_dropped_total)"
DECISION_LINES="$(grep -c '"message":"admission review"' "$WORK/guard.log" || true)"
LOG_BYTES="$(stat -c %s "$WORK/guard.log")"
OTHER_LINES="$(grep -vc '"message":"admission review"' "$WORK/guard.log" || true)"

# --- report ----------------------------------------------------------------------------------
if [[ -n "$GUARD_BUILT" ]]; then
    webhook="webhook built from $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "an unknown commit")"
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || webhook+=" with uncommitted changes"
else
    webhook="webhook $GUARD_BIN (prebuilt)"
fi
if [[ "$LOGS" == shipped ]]; then
    logging="LOGS=shipped: the Deployment's args, default log level, one JSON decision line per review"
else
    logging="LOGS=warn: the Deployment's args plus --log-level warn, decision log off (not the shipped configuration)"
fi
cpu="$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
shown_args="${GUARD_ARGS[*]}"
shown_args="${shown_args//$WORK/\$WORK}"
shown_args="${shown_args//$ROOT\//}"
{
    echo "### Load benchmark, $(date -u +%Y-%m-%d), logs: $LOGS"
    echo
    echo "$cpu, $(nproc) CPUs, Linux $(uname -r); $webhook."
    echo "Guard: $logging: \`pytorchjob-guard $shown_args\` (stderr to a file)."
    echo "Servers pinned to CPU $SERVER_CPU, $(h2load --version | head -1) pinned to CPU $CLIENT_CPU, loopback TLS ($(grep -h -m1 -o 'TLSv[0-9.]*' "$WORK"/guard-*.out 2>/dev/null | head -1 || true)$(awk -F'Cipher: ' '/Cipher:/ {print ", " $2; exit}' "$WORK"/guard-*.out))."
    echo "Load average before / after: $LOAD_BEFORE / $(cut -d' ' -f1-3 /proc/loadavg). \"Others' CPU\" is what other processes took from the server's and h2load's cores during each run: above a few percent, the run was disturbed."
    echo "Loaded: $CONNECTIONS keep-alive connections, 1 request at a time each, ${WARMUP}s warm-up + ${DURATION}s per run.$([[ "$CONNECTIONS" == 32 ]] || echo " (The targets are defined at 32 connections.)")"
    echo
    echo "| review | size | HTTP | guard req/s | baseline req/s | ratio | target (issue 13) | guard p50 / p99 ms | baseline p50 / p99 ms | server CPU % guard / baseline | server CPU µs/req guard / baseline | CPU cost ratio | h2load CPU % guard / baseline | peak RSS MiB guard / baseline | guard RSS < 40 MiB | others' CPU % server / client core: guard; baseline run |"
    echo "| --- | --- | --- | ---: | ---: | ---: | --- | --- | --- | --- | --- | ---: | --- | --- | --- | --- |"
    printf '%s\n' "${LOADED[@]}"
    echo
    verdict "RSS overall" $((PEAK_RSS < 40960 ? 1 : 0))
    echo "Peak RSS of the webhook under load: $(mib "$PEAK_RSS") MiB ($PEAK_RSS KiB; target < 40 MiB: $V)."
    echo "Ratio = guard req/s / baseline req/s, truncated to 0.001; targets are compared on the unrounded req/s. CPU cost ratio = baseline CPU per request / guard CPU per request: the throughput ratio both would reach if each saturated its core (robust when a run is client-bound or disturbed)."
    echo
    if [[ -n "$BEFORE" ]]; then
        echo "Before / after: server CPU µs per request of the webhook at $BEFORE (\`pytorchjob-guard ${BEFORE_ARGS[*]//$WORK/\$WORK}\`, its own Deployment args and policy) and of this one, each round, in the loaded runs above ($ROUNDS rounds each, alternating which runs first; this one's first round is the run in the table above). The target is issue 19's: the median after at most 1.10 × the median before; after / before truncated to 0.001."
        echo
        echo "| review | HTTP | before µs/req, each round | before median | after µs/req, each round | after median | after / before | target (issue 19) |"
        echo "| --- | --- | --- | ---: | --- | ---: | ---: | --- |"
        printf '%s\n' "${COMPARED[@]}"
        echo
    fi
    echo "Unloaded: 1 connection, 1 request at a time, HTTP/1.1, ${WARMUP}s warm-up + ${UNLOADED_DURATION}s, each review on the guard then on the baseline."
    echo
    echo "| review | size | guard req/s | baseline req/s | guard p50 / p99 ms | baseline p50 / p99 ms | p99 guard − baseline ms | target (issue 13) | others' CPU % server / client core: guard; baseline run |"
    echo "| --- | --- | ---: | ---: | --- | --- | ---: | --- | --- |"
    printf '%s\n' "${UNLOADED[@]}"
    if [[ " $REVIEWS " == *" deny-heavy "* && " $REVIEWS " == *" large "* ]]; then
        echo
        echo "Deny-heavy (no ratio target: a small multiple of a large allow's), guard only:"
        echo
        for proto in $PROTOCOLS; do
            echo "- $(proto_name "$proto"), $CONNECTIONS connections: CPU ${US[$proto/deny-heavy]} µs/req vs large ${US[$proto/large]} ($(ratio "${US[$proto/deny-heavy]}" "${US[$proto/large]}")×), p50 $(ms "${P50[$proto/deny-heavy]}") vs $(ms "${P50[$proto/large]}") ms."
        done
        echo "- Unloaded: p50 $(ms "${UP50[deny-heavy]}") vs $(ms "${UP50[large]}") ms ($(ratio "${UP50[deny-heavy]}" "${UP50[large]}")×), p99 $(ms "${UP99[deny-heavy]}") vs $(ms "${UP99[large]}") ms."
    fi
    echo
    if [[ "$LOGS" == shipped ]]; then
        same="the same count"
        [[ "$DECISION_LINES" == "$REVIEWS_ANSWERED" ]] || same="**a difference of $((${REVIEWS_ANSWERED//-/0} - DECISION_LINES))**"
        echo "Decision log: $DECISION_LINES JSON \"admission review\" lines ($LOG_BYTES bytes of stderr, $OTHER_LINES other line(s)) for $REVIEWS_ANSWERED reviews answered (pytorchjob_guard_reviews_total; h2load counted $H2LOAD_DONE 2xx outside its warm-ups): $same."
    else
        echo "Decision log: off (--log-level warn); $DECISION_LINES decision lines, $LOG_BYTES bytes of stderr, for $REVIEWS_ANSWERED reviews answered (pytorchjob_guard_reviews_total; h2load counted $H2LOAD_DONE 2xx outside its warm-ups)."
    fi
    if [[ "$LINES_DROPPED" == - ]]; then
        echo "Log lines dropped: this build exports no pytorchjob_guard_log_lines_dropped_total."
    else
        echo "Log lines dropped (pytorchjob_guard_log_lines_dropped_total): $LINES_DROPPED."
    fi
    echo
    not_met="$(printf '%s; ' "${NOT_MET[@]}")"
    echo "Targets (issue 13$([[ -z "$BEFORE" ]] || echo ", and issue 19's before / after")): ${#MET[@]} met, ${#NOT_MET[@]} not met${NOT_MET:+: ${not_met%; }}."
} | tee ${RESULTS:+"$RESULTS"}
