#!/usr/bin/env bash
# Task retention under a steady load (API.md §12, "under a steady load the database stops growing
# once the retention window is full"): runs `precache serve --task-retention 30s` for N minutes
# (default 4) under about 20 prefetch submissions a second (1-3 URLs each, on a few small origin
# files and some 404 paths) and 20 status queries a second of the accepted reqIds, and every 10 s
# samples precache.db, precache.db-wal and their sum in bytes, precache_tasks_deleted_total from
# GET /metrics, the serve process's VmRSS, and the rows in tasks and audit_log with the file's
# free pages (read-only sqlite3). Sizes, not speed: the load is moderate and fixed.
#
# Driver: bench/retention.py (python3 standard library). Origin: python3 -m http.server over a
# scratch dir. Everything on 127.0.0.1 (API 19300, edge 19301, origin 19302, edge admin a free
# port), bounded (the driver is killed after N minutes + 3), and stopped at the end.
#
#   bench/retention.sh [--minutes N] [--retention 30s] [--out DIR]
#
# Default out: bench/results/<date>-retention/ (samples.csv, summary.txt, summary.json,
# meta.txt, serve-log-warnings.txt); it refuses a dir holding another script's meta.txt.
# Environment: PRECACHE_BIN (default target/release/precache, copied into the scratch dir
# first), KEEP_WORK=1 keeps the scratch dir (serve.log, data dir).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${PRECACHE_BIN:-target/release/precache}
minutes=4
retention=30s
out=$repo/bench/results/$(date -u +%F)-retention
while [ $# -gt 0 ]; do
    case $1 in
        --minutes) minutes=$2; shift 2 ;;
        --retention) retention=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "retention.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
case $retention in
    *s) retention_s=${retention%s} ;;
    *m) retention_s=$(( ${retention%m} * 60 )) ;;
    *) echo "retention.sh: --retention takes Ns or Nm" >&2; exit 2 ;;
esac
[ -x "$bin" ] || { echo "retention.sh: $bin not found (PRECACHE_BIN)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "retention.sh: python3 not installed" >&2; exit 2; }
if [ -f "$out/meta.txt" ] && ! head -1 "$out/meta.txt" | grep -q '^script: bench/retention.sh'; then
    echo "retention.sh: $out/meta.txt belongs to another run; choose another --out" >&2
    exit 2
fi
api_port=19300 edge_port=19301 origin_port=19302
for port in $api_port $edge_port $origin_port; do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
        echo "retention.sh: 127.0.0.1:$port is already in use" >&2
        exit 2
    fi
done

work=$(mktemp -d /tmp/precache-retention.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 100); do
        alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    if [ "${KEEP_WORK:-}" = 1 ]; then echo "retention.sh: scratch dir kept: $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cp "$bin" "$work/precache"
mkdir -p "$work/origin" "$out"
files=()
for i in 0 1 2 3; do
    head -c $(( 1024 * (i + 1) )) /dev/urandom > "$work/origin/f$i.bin"
    files+=("f$i.bin")
done
{
    echo "script: bench/retention.sh"
    echo "started: $(date -u +%FT%TZ)"
    echo "commit: $(git -C /work/main rev-parse HEAD 2>/dev/null || git -C "$repo" rev-parse HEAD)"
    echo "binary: $bin ($(stat -c '%s bytes, modified %y' "$bin"))"
    echo "flags: serve --task-retention $retention (API 127.0.0.1:$api_port, edge 127.0.0.1:$edge_port, RUST_LOG=warn)"
    echo "load: ~20 prefetch submissions/s of 1-3 URLs (4 origin files of 1-4 KiB, 20 404 paths), ~20 status queries/s, $minutes minutes; sample every 10 s"
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ {print $2 " kB"}' /proc/meminfo), kernel $(uname -r)"
    echo "uptime at start: $(uptime)"
} > "$out/meta.txt"

(cd "$work/origin" && exec python3 -m http.server "$origin_port" --bind 127.0.0.1) >"$work/origin.log" 2>&1 &
pids+=($!)

PRECACHE_ADMIN_PASSWORD=bench-admin-pw RUST_LOG=warn "$work/precache" serve \
    --data-dir "$work/data" --api-listen 127.0.0.1:$api_port --edge-listen 127.0.0.1:$edge_port \
    --task-retention "$retention" >"$work/serve.log" 2>&1 &
serve_pid=$!
pids+=($serve_pid)

status=0
timeout --signal=TERM --kill-after=10 $(( minutes * 60 + 180 )) \
    python3 "$repo/bench/retention.py" --serve-pid "$serve_pid" --data-dir "$work/data" \
    --out "$out" --password bench-admin-pw --minutes "$minutes" --api-port $api_port \
    --origin-port $origin_port --files "$(IFS=,; echo "${files[*]}")" \
    --retention-s "$retention_s" || status=$?

echo "finished: $(date -u +%FT%TZ) (driver exit $status)" >> "$out/meta.txt"
grep -ciE ' (ERROR|WARN) ' "$work/serve.log" | sed 's/^/serve log warn+error lines: /' >> "$out/meta.txt" || true
grep -E ' (ERROR|WARN) ' "$work/serve.log" | sed -E 's/^[^ ]+ +//' | cut -c1-160 | sort | uniq -c |
    sort -rn | head -20 > "$out/serve-log-warnings.txt" || true
exit "$status"
