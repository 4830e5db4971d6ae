#!/usr/bin/env bash
# Backends benchmark: a 1,000-URL prefetch and a 1,000-URL refresh of 100 KiB objects on a
# fleet of three Varnish caches (the documented VCL, docs/backends/varnish.vcl), driven by
# `precache serve` through the backend `varnish-fleet` (the domain's only backend).
#
# Reports, for each task: the time from the POST to the status answering `done`, its
# success_rate, and the requests each Varnish received (varnishstat MAIN.client_req before and
# after: exactly one GET, then exactly one PURGE, per URL per target) and, for the prefetch,
# its fetches from the origin (MAIN.backend_req: one per URL per target).
#
# Everything listens on 127.0.0.1 (ports 19100-19111) and is stopped at the end. Needs varnish,
# python3, curl. Run after `cargo build --release`, with nothing else busy:
#
#   bench/backends.sh [--urls N] [--out FILE]
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${PRECACHE_BIN:-$repo/target/release/precache}
urls=1000
out=
while [ $# -gt 0 ]; do
    case $1 in
        --urls) urls=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "backends.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
[ -x "$bin" ] || { echo "backends.sh: $bin not found; run cargo build --release first" >&2; exit 2; }
command -v varnishd >/dev/null || { echo "backends.sh: varnishd not installed" >&2; exit 2; }

domain=bench.example.com
origin_port=19100
api_addr=127.0.0.1:19111
edge_addr=127.0.0.1:19110
varnish_ports="19101 19102 19103"

work=$(mktemp -d /var/tmp/precache-backends-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.5
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

# The origin: N files of 100 KiB.
mkdir -p "$work/origin/o"
head -c 102400 /dev/urandom > "$work/origin/o/0.bin"
for i in $(seq 1 $((urls - 1))); do cp "$work/origin/o/0.bin" "$work/origin/o/$i.bin"; done
(cd "$work/origin" && exec python3 -m http.server "$origin_port" --bind 127.0.0.1) \
    >"$work/origin.log" 2>&1 &
pids+=($!)

# Three Varnish caches with the documented VCL.
sed -e "s/{{ORIGIN_HOST}}/127.0.0.1/" -e "s/{{ORIGIN_PORT}}/$origin_port/" \
    "$repo/docs/backends/varnish.vcl" > "$work/precache.vcl"
targets=
for port in $varnish_ports; do
    varnishd -F -j none -T none -a "127.0.0.1:$port" -f "$work/precache.vcl" \
        -n "$work/varnish-$port" -s malloc,512m >"$work/varnish-$port.log" 2>&1 &
    pids+=($!)
    targets="$targets${targets:+, }\"http://127.0.0.1:$port\""
done

password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
PRECACHE_ADMIN_PASSWORD=$password RUST_LOG=${RUST_LOG:-warn} "$bin" serve \
    --data-dir "$work/data" --api-listen "$api_addr" --edge-listen "$edge_addr" \
    --max-urls-per-request "$urls" --edge-nice 0 >"$work/server.log" 2>&1 &
pids+=($!)

api=http://$api_addr/cdn_api
wait_for() {   # URL: until it answers
    for _ in $(seq 300); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
    echo "backends.sh: $1 never answered" >&2; cat "$work"/*.log >&2; exit 1
}
wait_for "$api/health"
wait_for "http://127.0.0.1:$origin_port/o/0.bin"
for port in $varnish_ports; do wait_for "http://127.0.0.1:$port/"; done

json() { python3 -c "import json,sys; d=json.load(sys.stdin)['zt_api']; print($1)"; }
call() {   # METHOD PATH TOKEN [BODY]
    curl -fsS -X "$1" "$api$2" -H "X-Auth-Token: $3" ${4:+-d "$4"}
}
admin=$(curl -fsS -X POST "$api/auth/tokens" -d "{\"username\": \"admin\", \"password\": \"$password\"}" |
        json 'd["token"]["id"]')
call POST /users "$admin" "{\"name\": \"bench\", \"password\": \"$password\", \"role\": \"user\"}" >/dev/null
call PUT /quota/bench "$admin" '{"prefetch_urls_per_day": 1000000, "refresh_urls_per_day": 1000000}' >/dev/null
call POST /backends "$admin" "{\"name\": \"varnish-fleet\", \"kind\": \"varnish\", \"targets\": [$targets]}" >/dev/null
call POST /domains "$admin" "{\"domain\": \"$domain\", \"origin\": \"http://127.0.0.1:$origin_port\",
                              \"owner\": \"bench\", \"backends\": [\"varnish-fleet\"]}" >/dev/null
token=$(curl -fsS -X POST "$api/auth/tokens" -d "{\"username\": \"bench\", \"password\": \"$password\"}" |
        json 'd["token"]["id"]')
list=$(python3 -c "import json; print(json.dumps(['http://$domain/o/%d.bin' % i for i in range($urls)]))")

counters() {   # FIELD: one value per cache
    for port in $varnish_ports; do
        varnishstat -n "$work/varnish-$port" -1 -f "$1" | awk '{print $2}'
    done | paste -sd' '
}

run_task() {   # KIND: prints "seconds success_rate pairs"
    local started req_id status
    started=$(date +%s.%N)
    req_id=$(call POST "/$1" "$token" "{\"urls\": $list}" | json 'd["reqId"]')
    while :; do
        status=$(call GET "/$1/$req_id" "$token" | json 'd["status"], d["success_rate"], d["pairs_total"]')
        case $status in
            done*|failed*) break ;;
        esac
        sleep 0.02
    done
    python3 -c "print('%.2f' % ($(date +%s.%N) - $started))" | tr '\n' ' '
    echo "$status"
}

report() {
    echo "$@"
    [ -z "$out" ] || echo "$@" >> "$out"
}
[ -z "$out" ] || : > "$out"
report "precache backends benchmark: $urls URLs of 100 KiB, Varnish fleet of 3, $(date -u +%FT%TZ)"
before_req=$(counters MAIN.client_req)
before_fetch=$(counters MAIN.backend_req)
result=$(run_task prefetch)
after_req=$(counters MAIN.client_req)
after_fetch=$(counters MAIN.backend_req)
set -- $result
report "prefetch: $2 in $1 s, success_rate $3, $4 pairs"
report "  requests per target (GET): before [$before_req] after [$after_req]"
report "  origin fetches per target: before [$before_fetch] after [$after_fetch]"
before_req=$after_req
result=$(run_task refresh)
after_req=$(counters MAIN.client_req)
set -- $result
report "refresh: $2 in $1 s, success_rate $3, $4 pairs"
report "  requests per target (PURGE): before [$before_req] after [$after_req]"
report "  objects purged per target: [$(counters MAIN.n_obj_purged)]"
