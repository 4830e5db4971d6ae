#!/usr/bin/env bash
# Soak test (issue 13): N minutes (default 30) of fixed-rate mixed load on `precache serve`, with
# a restart every 10 minutes, sampling the server each minute. Measures leaks and lost tasks, not
# throughput: the rates are moderate and fixed.
#
# Load (bench/soak.py, two worker processes at nice +5, keep-alive connections):
#   - 20 submissions/s: 50 % prefetches (1-5 URLs, some never seen), 25 % refreshes of 1-5 URLs
#     (delete or invalidate), 5 % refreshes of a directory of 50 hot objects, 20 %
#     refresh-then-warm ("prefetch": true);
#   - 100 status queries/s on the accepted reqIds (70 % among the last 200);
#   - 300 edge GETs/s with the domain's Host: 80 % on 500 hot objects (hits, unless just purged),
#     20 % on new objects (misses), every body checked byte for byte; plus every 2 s four
#     concurrent GETs of one new object the origin answers after 300 ms (collapsing);
#   - after minutes 10, 20, ...: SIGTERM, wait for the exit, start again on the same data dir.
# Each minute: RSS, open files, threads, CPU, the engine's pairs (/metrics), the data dir's size,
# load average and the busiest processes; per minute p50/p99 of each kind and errors by kind
# (those within a restart window, SIGTERM to answering again + 2 s, counted apart).
# --no-new-objects is a control: every GET and prefetch stays on the 500 hot objects, so the
# cache stops growing and what memory still grows is not the cache's index.
# At the end every reqId answered ret 0 is queried until it has ended (up to 10 minutes), and the
# origin's request counts are compared with the distinct objects.
#
# Everything listens on 127.0.0.1:19200-19203 and is stopped at the end. Needs python3
# (standard library only). The binary is copied into the scratch dir first, so a rebuild during
# the run does not change what restarts start. Run after `cargo build --release`:
#
#   bench/soak.sh [--minutes N] [--restart-every M] [--no-new-objects] [--out DIR]    # default out: bench/results/<date>-soak/
#
# Environment: PRECACHE_BIN (default target/release/precache), PRECACHE_COMMIT (recorded in
# meta.txt; default the checkout's HEAD), RUST_LOG (default warn), KEEP_WORK=1 keeps the scratch
# dir (server log, data dir, every reqId).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${PRECACHE_BIN:-$repo/target/release/precache}
minutes=30
restart_every=10
extra=()
out=$repo/bench/results/$(date -u +%F)-soak
while [ $# -gt 0 ]; do
    case $1 in
        --minutes) minutes=$2; shift 2 ;;
        --restart-every) restart_every=$2; shift 2 ;;
        --no-new-objects) extra+=(--no-new-objects); shift ;;
        --out) out=$2; shift 2 ;;
        *) echo "soak.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "soak.sh: $bin not found; run cargo build --release first" >&2; exit 2; }
command -v python3 >/dev/null || { echo "soak.sh: python3 not installed" >&2; exit 2; }
origin_port=19200

work=$(mktemp -d /var/tmp/precache-soak.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ "${KEEP_WORK:-}" = 1 ]; then echo "soak.sh: scratch dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT INT TERM

cp "$bin" "$work/precache"
mkdir -p "$out"
{
    echo "started: $(date -u +%FT%TZ)"
    echo "commit: ${PRECACHE_COMMIT:-$(git -C "$repo" rev-parse HEAD)}"
    echo "binary: $bin ($(stat -c '%y' "$bin"))"
    echo "minutes: $minutes"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo), kernel $(uname -r)"
    echo "uptime at start: $(uptime)"
} > "$out/meta.txt"

python3 "$repo/bench/soak.py" origin --port "$origin_port" >"$work/origin.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $origin_port), 1)" 2>/dev/null && break
    sleep 0.1
done

password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
status=0
python3 "$repo/bench/soak.py" run --bin "$work/precache" --work "$work" --out "$out" \
    --password "$password" --minutes "$minutes" --restart-every "$restart_every" --origin-port "$origin_port" ${extra[@]+"${extra[@]}"} || status=$?
echo "finished: $(date -u +%FT%TZ) (driver exit $status)" >> "$out/meta.txt"
grep -ciE ' (ERROR|WARN) ' "$work/server.log" | sed 's/^/server log warn+error lines: /' >> "$out/meta.txt" || true
grep -E ' (ERROR|WARN) ' "$work/server.log" | sed -E 's/^[^ ]+ +//' | cut -c1-160 | sort | uniq -c |
    sort -rn | head -20 > "$out/server-log-warnings.txt" || true
exit "$status"
