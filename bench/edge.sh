#!/usr/bin/env bash
# The edge benchmark: precache's edge side by side with nginx and Varnish, in one invocation of
# the shared harness (../shared/bench/edge-bench.sh). See bench/README.md.
#
#   bench/edge.sh [harness options...]
#   bench/edge.sh --access-log [harness options...]   # precache with and without --edge-access-log
#   bench/edge.sh --before BIN [harness options...]   # this build beside another (e.g. an earlier commit's)
#
# Environment: PRECACHE_BIN (default target/release/precache), EDGE_BENCH (the harness),
# PRECACHE_CACHE_SIZE (the edge's disk budget, default 8GiB).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${PRECACHE_BIN:-$repo/target/release/precache}
harness=${EDGE_BENCH:-$repo/../shared/bench/edge-bench.sh}
api_addr=127.0.0.1:19011
edge_addr=127.0.0.1:19010
origin=http://127.0.0.1:19000
domain=game.example.com

[ -x "$bin" ] || { echo "edge.sh: $bin not found; run cargo build --release first" >&2; exit 2; }
[ -x "$harness" ] || { echo "edge.sh: harness $harness not found" >&2; exit 2; }

work=$(mktemp -d /var/tmp/precache-edge-bench.XXXXXX)
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
server_pids=()
cleanup() {
    for pid in "${server_pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# Starts `precache serve` (NAME EDGE_ADDR API_ADDR [extra flags...]) and registers the domain;
# the binary is $server_bin (default: $bin).
start_precache() {
    local name=$1 edge=$2 api_listen=$3
    shift 3
    PRECACHE_ADMIN_PASSWORD=$password RUST_LOG=${RUST_LOG:-warn} "${server_bin:-$bin}" serve \
        --data-dir "$work/$name" --api-listen "$api_listen" --edge-listen "$edge" \
        --cache-size "${PRECACHE_CACHE_SIZE:-8GiB}" --edge-nice 0 "$@" >"$work/$name.log" 2>&1 &
    local pid=$!
    server_pids+=("$pid")
    local api=http://$api_listen/cdn_api
    for _ in $(seq 100); do
        curl -fsS "$api/health" >/dev/null 2>&1 && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/$name.log" >&2; exit 1; }
        sleep 0.1
    done
    local token
    token=$(curl -fsS -X POST "$api/auth/tokens" \
            -d "{\"username\": \"admin\", \"password\": \"$password\"}" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["zt_api"]["token"]["id"])')
    curl -fsS -o /dev/null -X POST "$api/users" -H "X-Auth-Token: $token" \
         -d "{\"name\": \"bench\", \"password\": \"$password\", \"role\": \"user\"}"
    curl -fsS -o /dev/null -X POST "$api/domains" -H "X-Auth-Token: $token" \
         -d "{\"domain\": \"$domain\", \"origin\": \"$origin\", \"owner\": \"bench\"}"
    # The domain table reaches the edge through the edge protocol; wait until the edge routes
    # it (an unknown host is a 404 without any origin contact; a known one is proxied, and the
    # origin is not up yet, so anything but 404 will do).
    for _ in $(seq 100); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $domain" "http://$edge/static/1k.bin" || true)
        [ "$code" != 404 ] && break
        sleep 0.1
    done
}

edges=()
if [ "${1:-}" = "--before" ]; then
    # This build and another one (an earlier commit's), measured in one invocation.
    before_bin=$2
    shift 2
    start_precache precache "$edge_addr" "$api_addr"
    server_bin=$before_bin start_precache precache-before 127.0.0.1:19020 127.0.0.1:19021
    edges=(precache="$edge_addr" precache-before=127.0.0.1:19020)
elif [ "${1:-}" = "--access-log" ]; then
    # The same edge twice, without and with its access log, measured in one invocation.
    shift
    start_precache precache "$edge_addr" "$api_addr"
    start_precache precache-log 127.0.0.1:19020 127.0.0.1:19021 --edge-access-log "$work/access.log"
    edges=(precache="$edge_addr" precache-log=127.0.0.1:19020)
else
    start_precache precache "$edge_addr" "$api_addr"
    edges=(nginx=127.0.0.1:19001 varnish=127.0.0.1:19002 precache="$edge_addr")
fi

"$harness" "${edges[@]}" "$@"
