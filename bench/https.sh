#!/usr/bin/env bash
# HTTPS hits beside nginx (issue 14): precache's TLS listener (--edge-tls-listen) and nginx as a
# TLS caching proxy, with the same certificate (a private CA's ECDSA P-256 leaf), TLS 1.3 and
# session resumption on both, in front of one nginx origin. See bench/README.md.
#
#   cargo build --release
#   bench/https.sh [--rounds N] [--duration S] [--out DIR]
#
# Each round measures, for nginx then precache (the order is reversed every other round):
#   1k          wrk -t2 -c64, kept-alive connections, a 1 KiB hit
#   10m         wrk -t2 -c8, kept-alive connections, a 10 MiB hit (wrk reads 8 KiB at a time)
#   10m-py      https_client.py, 4 connections reading 10 MiB hits with 1 MiB reads
#   1k-close    wrk -t2 -c32 -H "Connection: close": a full handshake per 1 KiB hit
#   1k-resumed  https_client.py, 4 processes, a new connection per 1 KiB hit resuming the last
# Before the rounds, `openssl s_client -sess_out/-sess_in` checks that each server resumes.
# Environment: PRECACHE_BIN (default target/release/precache).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${PRECACHE_BIN:-$repo/target/release/precache}
rounds=2
duration=10
out=$repo/bench/results/$(date -u +%F)-https
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --duration) duration=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "https.sh: unknown option $1" >&2; exit 2 ;;
    esac
done

origin_port=19310
nginx_port=19311
edge_port=19312
edge_tls_port=19313
api_addr=127.0.0.1:19314
domain=bench.example.com

[ -x "$bin" ] || { echo "https.sh: $bin not found; run cargo build --release first" >&2; exit 2; }
"$bin" serve --help | grep -q -- --edge-tls-listen ||
    { echo "https.sh: $bin has no --edge-tls-listen; rebuild" >&2; exit 2; }
for tool in nginx wrk openssl curl python3; do
    command -v "$tool" >/dev/null || { echo "https.sh: $tool not found" >&2; exit 2; }
done

work=$(mktemp -d /var/tmp/precache-https-bench.XXXXXX)
password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
pids=()
cleanup() {
    for pid in "${pids[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for conf in origin edge; do
        [ -f "$work/$conf/nginx.pid" ] && nginx -p "$work/$conf" -c "$work/$conf/nginx.conf" -s stop 2>/dev/null
    done
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
mkdir -p "$out"

# --- Certificates: a private CA and a leaf for the domain, used by both servers.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
    -subj "/CN=precache bench CA" -keyout "$work/ca-key.pem" -out "$work/ca.pem" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$domain" -keyout "$work/leaf-key.pem" -out "$work/leaf.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' \
    "$domain" >"$work/leaf.ext"
openssl x509 -req -in "$work/leaf.csr" -CA "$work/ca.pem" -CAkey "$work/ca-key.pem" \
    -CAcreateserial -days 30 -extfile "$work/leaf.ext" -out "$work/leaf.pem" 2>/dev/null

# --- The origin: nginx serving a 1 KiB and a 10 MiB file, cacheable for an hour.
user_line=""
[ "$(id -u)" = 0 ] && user_line="user root;"
mkdir -p "$work/origin/data" "$work/origin/tmp" "$work/origin/logs" "$work/edge/cache" "$work/edge/tmp" "$work/edge/logs"
head -c 1024 /dev/urandom >"$work/origin/data/1k.bin"
head -c $((10 * 1024 * 1024)) /dev/urandom >"$work/origin/data/10m.bin"
common_http="
    types { application/octet-stream bin; }
    default_type application/octet-stream;
    access_log off;
    tcp_nopush off;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;"
temp_paths() {
    local d=$1
    echo "client_body_temp_path $d/tmp/body; proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi; uwsgi_temp_path $d/tmp/uwsgi; scgi_temp_path $d/tmp/scgi;"
}
cat >"$work/origin/nginx.conf" <<EOF
$user_line
worker_processes 1;
pid $work/origin/nginx.pid;
error_log $work/origin/error.log warn;
events { worker_connections 1024; }
http {
    $common_http
    sendfile on;
    $(temp_paths "$work/origin")
    server {
        listen 127.0.0.1:$origin_port;
        add_header Cache-Control "public, max-age=3600" always;
        root $work/origin/data;
    }
}
EOF

# --- nginx as the TLS caching edge: the cache settings of ../shared/bench/conf/edge.nginx.conf.
cat >"$work/edge/nginx.conf" <<EOF
$user_line
worker_processes auto;
pid $work/edge/nginx.pid;
error_log $work/edge/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    $common_http
    sendfile on;
    open_file_cache max=100000 inactive=600s;
    open_file_cache_valid 600s;
    $(temp_paths "$work/edge")
    proxy_cache_path $work/edge/cache levels=1:2 keys_zone=edge:64m max_size=16g inactive=30d use_temp_path=off;
    upstream origin {
        server 127.0.0.1:$origin_port;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:$nginx_port ssl http2 backlog=4096 reuseport;
        server_name $domain;
        ssl_certificate $work/leaf.pem;
        ssl_certificate_key $work/leaf-key.pem;
        ssl_protocols TLSv1.3;
        ssl_session_cache shared:SSL:10m;
        ssl_session_timeout 1h;
        ssl_session_tickets on;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_cache edge;
            proxy_cache_key \$host\$request_uri;
            proxy_cache_valid 200 206 301 302 30d;
            proxy_cache_valid any 10s;
            proxy_ignore_headers Cache-Control Expires Set-Cookie Vary X-Accel-Expires;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 60s;
            proxy_cache_lock_age 60s;
            proxy_cache_use_stale error timeout updating;
            proxy_buffer_size 16k;
            proxy_buffers 32 16k;
            proxy_read_timeout 120s;
            add_header X-Cache \$upstream_cache_status always;
        }
    }
}
EOF
nginx -p "$work/origin" -c "$work/origin/nginx.conf"
nginx -p "$work/edge" -c "$work/edge/nginx.conf"

# --- precache: serve with the TLS listener, the domain registered and its certificate uploaded.
PRECACHE_ADMIN_PASSWORD=$password RUST_LOG=${RUST_LOG:-warn} "$bin" serve \
    --data-dir "$work/data" --api-listen "$api_addr" --edge-listen "127.0.0.1:$edge_port" \
    --edge-tls-listen "127.0.0.1:$edge_tls_port" --cache-size 8GiB --edge-nice 0 \
    >"$work/precache.log" 2>&1 &
pids+=($!)
api=http://$api_addr/cdn_api
for _ in $(seq 100); do
    curl -fsS "$api/health" >/dev/null 2>&1 && break
    kill -0 "${pids[0]}" 2>/dev/null || { cat "$work/precache.log" >&2; exit 1; }
    sleep 0.1
done
token=$(curl -fsS -X POST "$api/auth/tokens" \
        -d "{\"username\": \"admin\", \"password\": \"$password\"}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["zt_api"]["token"]["id"])')
curl -fsS -o /dev/null -X POST "$api/users" -H "X-Auth-Token: $token" \
     -d "{\"name\": \"bench\", \"password\": \"$password\", \"role\": \"user\"}"
curl -fsS -o /dev/null -X POST "$api/domains" -H "X-Auth-Token: $token" \
     -d "{\"domain\": \"$domain\", \"origin\": \"http://127.0.0.1:$origin_port\", \"owner\": \"bench\"}"
python3 -c 'import json,sys; print(json.dumps({"cert_pem": open(sys.argv[1]).read(), "key_pem": open(sys.argv[2]).read()}))' \
    "$work/leaf.pem" "$work/leaf-key.pem" |
    curl -fsS -o /dev/null -X PUT "$api/domains/$domain/certificate" -H "X-Auth-Token: $token" --data-binary @-

declare -A port=([nginx]=$nginx_port [precache]=$edge_tls_port)
url() { echo "https://$domain:${port[$1]}$2"; }
fetch() {
    curl -sS -o /dev/null --cacert "$work/ca.pem" --resolve "$domain:${port[$1]}:127.0.0.1" \
         -w '%{http_code} %{size_download} %{http_version} %header{x-cache}' "$(url "$1" "$2")"
}

# Warms both caches: each object until it is a HIT (the first answer is a MISS, stored as it
# streams).
for server in nginx precache; do
    for path in /1k.bin /10m.bin; do
        state=""
        for _ in $(seq 100); do
            state=$(fetch "$server" "$path" 2>/dev/null || true)
            case $state in "200 "*" HIT"*) break ;; esac
            sleep 0.1
        done
        echo "warm $server $path: $state"
        case $state in "200 "*" HIT"*) ;; *) echo "https.sh: $server never answered a HIT for $path" >&2; tail -20 "$work/precache.log" >&2; exit 1 ;; esac
    done
done

# wrk takes the server's name from the URL (SNI, Host) but must connect to 127.0.0.1.
cat >"$work/resolve.lua" <<EOF
wrk.resolve = function(host, service)
    wrk.addrs = wrk.lookup("127.0.0.1", service)
end
EOF

# Session resumption, the way a client would see it: a session saved from one connection (after
# an answer, when the TLS 1.3 ticket has arrived) offered to the next.
{
    echo "# openssl s_client -sess_out then -sess_in, $(date -u +%FT%TZ)"
    for server in nginx precache; do
        for attempt in first second; do
            if [ $attempt = first ]; then sess=(-sess_out "$work/$server.sess"); else sess=(-sess_in "$work/$server.sess"); fi
            line=$(printf 'GET /1k.bin HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$domain" |
                   timeout 10 openssl s_client -connect "127.0.0.1:${port[$server]}" -servername "$domain" \
                       -CAfile "$work/ca.pem" -tls1_3 -ign_eof "${sess[@]}" 2>/dev/null |
                   grep -E '^(New|Reused),' | head -1)
            echo "$server $attempt: ${line:-no handshake}"
        done
    done
} | tee "$out/resumption.txt"

# The CPU seconds (user + system) used so far by a server's processes: nginx's workers, or
# precache serve (its API idles meanwhile).
server_pids() {
    case $1 in
        nginx) pgrep -P "$(cat "$work/edge/nginx.pid")" ;;
        precache) echo "${pids[0]}" ;;
    esac
}
cpu_seconds() {
    local pid
    for pid in $(server_pids "$1"); do cat "/proc/$pid/stat"; done |
        awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); t += $12 + $13 } END { printf "%.2f", t / hz }'
}

# One measurement: writes $out/<round>-<test>-<server>.txt, ending with the server's CPU seconds.
measure() {
    local round=$1 test=$2 server=$3 file="$out/$1-$2-$3.txt"
    local addr=127.0.0.1:${port[$server]}
    local cpu_before
    cpu_before=$(cpu_seconds "$server")
    local py=(python3 "$repo/bench/https_client.py" --addr "$addr" --host "$domain" --seconds "$duration" --cafile "$work/ca.pem")
    case $test in
        1k) wrk -t2 -c64 -d"${duration}s" --latency -s "$work/resolve.lua" "$(url "$server" /1k.bin)" ;;
        10m) wrk -t2 -c8 -d"${duration}s" --latency -s "$work/resolve.lua" "$(url "$server" /10m.bin)" ;;
        10m-py) "${py[@]}" --path /10m.bin --length $((10 * 1024 * 1024)) --procs 4 --mode keepalive ;;
        1k-close) wrk -t2 -c32 -d"${duration}s" --latency -s "$work/resolve.lua" -H "Connection: close" "$(url "$server" /1k.bin)" ;;
        1k-resumed) "${py[@]}" --path /1k.bin --length 1024 --procs 4 --mode resumed ;;
    esac >"$file" 2>&1
    echo "server_cpu_seconds: $(echo "$(cpu_seconds "$server") - $cpu_before" | bc)" >>"$file"
    echo "$(date -u +%T) round $round $test $server: $(grep -hE 'Requests/sec|Transfer/sec|^\{|server_cpu' "$file" | tr -s ' \n' ' ')"
}

tests=(1k 10m 10m-py 1k-close 1k-resumed)
for round in $(seq "$rounds"); do
    if [ $((round % 2)) = 1 ]; then order=(nginx precache); else order=(precache nginx); fi
    for test in "${tests[@]}"; do
        for server in "${order[@]}"; do
            measure "$round" "$test" "$server"
        done
    done
done | tee "$out/log.txt"

# The table: medians over rounds.
python3 - "$out" "$rounds" "${tests[@]}" <<'EOF' | tee "$out/summary.txt"
import json, re, statistics, sys
out, rounds, tests = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def unit(v, u):
    return float(v) * {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3,
                       "us": 1e-3, "ms": 1, "s": 1e3}[u]
def read(path):
    text = open(path).read()
    cpu = float(re.search(r"server_cpu_seconds: ([\d.]+)", text).group(1))
    text = re.sub(r"server_cpu_seconds:.*", "", text)
    r = read_client(text)
    r["cpu"] = cpu
    return r
def read_client(text):
    if text.lstrip().startswith("{"):
        r = json.loads(text.strip().splitlines()[0])
        return {"req_s": r["req_s"], "mb_s": r["mb_s"], "p50": r["p50_ms"], "p99": r["p99_ms"],
                "errors": r["errors"], "resumed": f'{r["resumed"]}/{r["connections"]}'}
    r = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text); r["req_s"] = float(m.group(1))
    m = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", text); r["mb_s"] = unit(m.group(1), m.group(2)) / 1e6
    for q, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+([\d.]+)(\w+)", text, re.M)
        r[key] = unit(m.group(1), m.group(2)) if m else None
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    e = re.search(r"Socket errors: (.*)", text)
    r["errors"] = (int(m.group(1)) if m else 0)
    r["socket_errors"] = e.group(1) if e else ""
    return r
def med(rows, key):
    vals = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(vals) if vals else None
print(f"{'test':<11} {'server':<9} {'req/s':>9} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU s':>6}  {'ratio':>6}  rounds (req/s)  errors")
for test in tests:
    rows = {s: [read(f"{out}/{n}-{test}-{s}.txt") for n in range(1, rounds + 1)] for s in ("nginx", "precache")}
    base = med(rows["nginx"], "req_s")
    for s in ("nginx", "precache"):
        req = med(rows[s], "req_s")
        fmt = lambda v: "-" if v is None else f"{v:.2f}"
        extra = " ".join(str(r["req_s"]) for r in rows[s])
        errs = " ".join(str(r["errors"]) + (f" ({r['socket_errors']})" if r.get("socket_errors") else "") for r in rows[s])
        res = " resumed " + ",".join(r["resumed"] for r in rows[s]) if "resumed" in rows[s][0] else ""
        print(f"{test:<11} {s:<9} {req:>9.0f} {med(rows[s], 'mb_s'):>8.1f} {fmt(med(rows[s], 'p50')):>8} "
              f"{fmt(med(rows[s], 'p99')):>8} {med(rows[s], 'cpu'):>6.1f}  {req / base:>5.2f}x  {extra}  {errs}{res}")
EOF
