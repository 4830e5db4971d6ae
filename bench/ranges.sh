#!/usr/bin/env bash
# Ranges of a cold object (issue 16): how long a range near the start and one near the end of a
# cold 1 GiB object take through the edge, next to a whole cold GET of the same size.
#
# A range ahead of the fill waits for the fill (docs/api.md, "Ranges"), so the range near the end
# should take about as long as the whole object, and the one near the start about as long as its
# own bytes. Loopback only; python3's http.server is the origin. Each round uses fresh paths (hard
# links of one file), so every request is cold for the edge while the origin serves from the page
# cache.
#
#   cargo build --release
#   bench/ranges.sh [rounds]        # default 3 rounds; about 10 s a round
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${PRECACHE_BIN:-$repo/target/release/precache}
rounds=${1:-3}
api_addr=127.0.0.1:19041
edge_addr=127.0.0.1:19040
origin_addr=127.0.0.1:19042
domain=ranges.example.com
size=$((1024 * 1024 * 1024))
range_len=$((1024 * 1024))

[ -x "$bin" ] || { echo "ranges.sh: $bin not found; run cargo build --release first" >&2; exit 2; }

work=$(mktemp -d /var/tmp/precache-ranges-bench.XXXXXX)
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

mkdir -p "$work/origin"
head -c "$size" /dev/urandom >"$work/origin/object.bin"
python3 -m http.server "${origin_addr##*:}" --bind 127.0.0.1 --directory "$work/origin" \
    >"$work/origin.log" 2>&1 &
pids+=($!)

PRECACHE_ADMIN_PASSWORD=$password RUST_LOG=${RUST_LOG:-warn} "$bin" serve \
    --data-dir "$work/data" --api-listen "$api_addr" --edge-listen "$edge_addr" \
    --cache-size 8GiB --edge-nice 0 >"$work/precache.log" 2>&1 &
pids+=($!)
api=http://$api_addr/cdn_api
for _ in $(seq 100); do
    curl -fsS "$api/health" >/dev/null 2>&1 && break
    sleep 0.1
done
token=$(curl -fsS -X POST "$api/auth/tokens" \
        -d "{\"username\": \"admin\", \"password\": \"$password\"}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["zt_api"]["token"]["id"])')
curl -fsS -o /dev/null -X POST "$api/users" -H "X-Auth-Token: $token" \
     -d "{\"name\": \"bench\", \"password\": \"$password\", \"role\": \"user\"}"
curl -fsS -o /dev/null -X POST "$api/domains" -H "X-Auth-Token: $token" \
     -d "{\"domain\": \"$domain\", \"origin\": \"http://$origin_addr\", \"owner\": \"bench\"}"
for _ in $(seq 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $domain" "http://$edge_addr/none" || true)
    [ "$code" != 404 ] && break
    sleep 0.1
done
# Warms the origin's page cache, so rounds measure the edge rather than the origin's disk.
cat "$work/origin/object.bin" >/dev/null

# One request: "<status> <bytes> <seconds to first byte> <seconds in all>".
fetch() {
    local path=$1
    shift
    curl -sS -o /dev/null --max-time 300 -H "Host: $domain" "$@" \
         -w '%{http_code} %{size_download} %{time_starttransfer} %{time_total}\n' \
         "http://$edge_addr$path"
}

# Waits until the fill of `path` is done, so cases do not overlap: a whole GET of an object being
# filled follows the fill to its end.
settle() {
    fetch "$1" >/dev/null
}

printf '%-6s %-12s %-6s %-12s %-10s %-10s\n' round case status bytes first_byte total
for round in $(seq "$rounds"); do
    for case in start end whole; do
        ln "$work/origin/object.bin" "$work/origin/$case-$round.bin"
    done
    read -r status bytes first total < <(fetch "/start-$round.bin" -r "0-$((range_len - 1))")
    printf '%-6s %-12s %-6s %-12s %-10s %-10s\n' "$round" near-start "$status" "$bytes" "$first" "$total"
    settle "/start-$round.bin"
    read -r status bytes first total < <(fetch "/end-$round.bin" -r "$((size - range_len))-")
    printf '%-6s %-12s %-6s %-12s %-10s %-10s\n' "$round" near-end "$status" "$bytes" "$first" "$total"
    read -r status bytes first total < <(fetch "/whole-$round.bin")
    printf '%-6s %-12s %-6s %-12s %-10s %-10s\n' "$round" whole "$status" "$bytes" "$first" "$total"
done
