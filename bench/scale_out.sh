#!/usr/bin/env bash
# Scale-out benchmark: separate `precache api` and `precache edge` processes on loopback.
#
# What it measures (see bench/README.md and bench/RESULTS.md):
#
#   fanout:N  N independent edges (no parent). /a.bin (1 KiB) is prefetched once so every edge
#             holds it, then R refreshes of that URL run one after the other (each waits until
#             its task is `done`). Sample = the server's `propagation_ms` (acceptance to the last
#             edge's confirmation); also the client's wall time from POST to seeing `done`
#             (status polled every 5 ms). Reports p50/p90/p99/max.
#             Targets: N=3 p50 < 20 ms, N=20 p50 < 100 ms.
#             Only the first of those refreshes finds the object cached; a second phase
#             (--rewarm R2, default 100, 0 skips it) refills every edge before each refresh (GETs
#             through each edge until X-Cache: HIT), so each purge removes a cached object.
#   shield:N  a parent edge `shield` and N children with "parent": "shield". One prefetch of
#             /big.bin (10 MiB, deterministic) goes to all N+1 edges. Reports the origin's
#             requests for /big.bin (target: exactly 1), POST-to-done time, and checks a GET on
#             every child (and the shield) is X-Cache: HIT with the right length and bytes.
#
# Each scenario starts from scratch: a fresh data dir, one `precache api` on SQLite, a tiny
# threaded python3 origin, the edges (`--edge-threads 1 --cache-size 1GiB --cache-min-free 0`),
# and stops them all at the end (also on error or Ctrl-C). Everything listens on 127.0.0.1
# with ports picked by the kernel. Needs bash, curl, python3 (standard library only).
#
# Run (after `cargo build --release`, with nothing else busy on the machine):
#
#   bench/scale_out.sh                                  # fanout:3 fanout:20 shield:3 shield:20
#   bench/scale_out.sh --scenarios "fanout:3" --refreshes 20 --rewarm 0
#   bench/scale_out.sh --out bench/results/2026-11-28-scale-out
#
# Output: per scenario a file in --out (fanout-N.txt, shield-N.txt: every sample and a summary)
# and a combined fanout.txt / shield.txt. Environment: PRECACHE_BIN (default
# target/release/precache), RUST_LOG for the precache processes (default warn), KEEP_WORK=1 to
# keep the scratch directory (logs, data dirs). On a failure the scratch directory is kept and
# its path printed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${PRECACHE_BIN:-$repo/target/release/precache}
scenarios="fanout:3 fanout:20 shield:3 shield:20"
refreshes=100
rewarm=100           # refreshes of the secondary fanout phase (0: skip it)
out=$repo/bench/results/$(date -u +%F)-scale-out
start_timeout=60     # s: a process prints its start line, all edges are up
task_timeout=120     # s: one task (prefetch or refresh) is done

while [ $# -gt 0 ]; do
    case $1 in
        --scenarios) scenarios=$2; shift 2 ;;
        --refreshes) refreshes=$2; shift 2 ;;
        --rewarm) rewarm=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "scale_out.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

[ -x "$bin" ] || { echo "scale_out.sh: $bin not found; run cargo build --release first" >&2; exit 2; }
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "scale_out.sh: $tool is required" >&2; exit 2; }
done

# Only what this script sets reaches precache.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^PRECACHE_' || true)
export RUST_LOG=${RUST_LOG:-warn}

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d /var/tmp/precache-scale-out.XXXXXX)
pids=()
failed=1

log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

stop_all() {
    local pid
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ $alive = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}

cleanup() {
    stop_all
    if [ "$failed" = 1 ] || [ -n "${KEEP_WORK:-}" ]; then
        log "scratch directory kept: $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------------------------
# The origin: /a.bin (1 KiB) and /big.bin (10 MiB), both deterministic and cacheable for a day;
# /__probe answers 204 uncached; /__count is the JSON of requests seen per "METHOD path".
cat >"$work/origin.py" <<'PY'
import http.server, json, random, sys, threading

BODIES = {
    "/a.bin": random.Random(1).randbytes(1024),
    "/big.bin": random.Random(10).randbytes(10 << 20),
}
counts = {}
lock = threading.Lock()

class Origin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self, head):
        path = self.path.split("?", 1)[0]
        if path == "/__count":
            with lock:
                body = json.dumps(counts).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        with lock:
            key = f"{self.command} {path}"
            counts[key] = counts.get(key, 0) + 1
        if path == "/__probe":
            self.send_response(204)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = BODIES.get(path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "public, max-age=86400")
        self.send_header("Last-Modified", "Sat, 28 Nov 2026 00:00:00 GMT")
        self.end_headers()
        if not head:
            view = memoryview(body)
            for start in range(0, len(body), 1 << 20):
                self.wfile.write(view[start:start + (1 << 20)])

    def do_GET(self):
        self.answer(False)

    def do_HEAD(self):
        self.answer(True)

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Origin)
server.daemon_threads = True
with open(sys.argv[1], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
PY

# ---------------------------------------------------------------------------------------------
# The client: every API call, timing and check, over keep-alive connections.
cat >"$work/drive.py" <<'PY'
import hashlib, http.client, json, random, sys, time
from urllib.parse import urlsplit

class Api:
    def __init__(self, base, token=None):
        u = urlsplit(base)
        self.host, self.port = u.hostname, u.port
        self.token = token
        self.conn = None

    def call(self, method, path, body=None, ok=(200, 201)):
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
            headers = {"Content-Type": "application/json"}
            if self.token:
                headers["X-Auth-Token"] = self.token
            data = None if body is None else json.dumps(body)
            try:
                self.conn.request(method, "/cdn_api" + path, data, headers)
                resp = self.conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
                continue
            break
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = {"raw": raw.decode("utf-8", "replace")}
        zt = answer.get("zt_api", {}) if isinstance(answer, dict) else {}
        if resp.status not in ok or zt.get("ret") != 0:
            raise SystemExit(f"{method} /cdn_api{path} {json.dumps(body)} -> HTTP {resp.status}: "
                             f"{raw.decode('utf-8', 'replace')[:2000]}")
        return zt

def login(base, user, password):
    zt = Api(base).call("POST", "/auth/tokens", {"username": user, "password": password})
    return zt["token"]["id"]

def percentile(sorted_values, p):
    # nearest rank
    if not sorted_values:
        return float("nan")
    rank = max(1, -(-len(sorted_values) * p // 100))
    return sorted_values[int(rank) - 1]

def summary(name, values):
    v = sorted(values)
    return (f"{name}: n={len(v)} p50={percentile(v, 50)} p90={percentile(v, 90)} "
            f"p99={percentile(v, 99)} max={v[-1]} min={v[0]} mean={sum(v) / len(v):.1f}")

def wait_task(api, kind, req_id, timeout, interval):
    """Polls until the task ended; returns (final status dict, client ms from `t0` given)."""
    deadline = time.monotonic() + float(timeout)
    while True:
        zt = api.call("GET", f"/{kind}/{req_id}")
        if zt.get("status") in ("done", "failed", "cancelled"):
            return zt
        if time.monotonic() > deadline:
            raise SystemExit(f"{kind} {req_id} not ended after {timeout}s; last status:\n"
                             + json.dumps(zt, indent=1, sort_keys=True))
        time.sleep(interval)

def edge_get(addr, host, path):
    h, p = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(h, int(p), timeout=30)
    conn.request("GET", path, headers={"Host": host})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, resp.getheader("X-Cache"), body

def origin_counts(origin):
    u = urlsplit(origin)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("GET", "/__count")
    counts = json.loads(conn.getresponse().read())
    conn.close()
    return counts

def edge_lines(zt):
    lines = []
    for url in zt.get("urls", []):
        for e in url.get("edges", []):
            lines.append(f"  {e.get('edge', e.get('name', '?'))}: status={e.get('status')} "
                         f"http={e.get('http_status')} bytes={e.get('bytes')} "
                         f"objects={e.get('objects')} was_cached={e.get('was_cached')} "
                         f"attempts={e.get('attempts')} started={e.get('started_at')} "
                         f"finished={e.get('finished_at')} error={e.get('error')}")
    return lines

def cmd_setup(base, admin_password, user_password, origin, domain):
    admin = Api(base, login(base, "admin", admin_password))
    admin.call("POST", "/users", {"name": "bench", "password": user_password, "role": "user"})
    admin.call("PUT", "/quota/bench", {"prefetch_urls_per_day": 1000000,
                                      "refresh_urls_per_day": 1000000})
    admin.call("POST", "/domains", {"domain": domain, "origin": origin, "owner": "bench"})

def cmd_edges_up(base, admin_password, expected, timeout):
    admin = Api(base, login(base, "admin", admin_password))
    expected = set(expected.split(","))
    deadline = time.monotonic() + float(timeout)
    while True:
        edges = admin.call("GET", "/edges")["edges"]
        up = {e["name"] for e in edges if e.get("state") == "up"}
        if expected <= up:
            print(f"edges up: {len(up)}")
            return
        if time.monotonic() > deadline:
            raise SystemExit("edges not up after %ss:\n%s" % (timeout, json.dumps(edges, indent=1)))
        time.sleep(0.2)

def cmd_fanout(base, user_password, domain, origin, edges, refreshes, rewarm, timeout, out):
    api = Api(base, login(base, "bench", user_password))
    url = f"http://{domain}/a.bin"
    edges = edges.split(",")
    lines = []
    emit = lambda s: (lines.append(s), print(s, flush=True))
    zt = api.call("POST", "/prefetch", {"urls": [url]})
    st = wait_task(api, "prefetch", zt["reqId"], timeout, 0.01)
    emit(f"prefetch {url}: status={st['status']} pairs_success={st.get('pairs_success')}/"
         f"{st.get('pairs_total')}")
    if st["status"] != "done" or st.get("pairs_success") != len(edges):
        emit("\n".join(edge_lines(st)))
        raise SystemExit("the prefetch did not reach every edge")
    hits = 0
    for addr in edges:
        status, xcache, body = edge_get(addr, domain, "/a.bin")
        hits += status == 200 and (xcache or "").upper() == "HIT" and len(body) == 1024
    emit(f"edges answering /a.bin from cache (X-Cache: HIT, 1024 bytes) before the refreshes: "
         f"{hits}/{len(edges)}")
    before = origin_counts(origin)
    prop, wall, bad = [], [], 0
    emit("i reqId propagation_ms client_ms pairs_success/pairs_total edges_that_held_it")
    for i in range(1, int(refreshes) + 1):
        t0 = time.monotonic()
        zt = api.call("POST", "/refresh", {"urls": [url]})
        st = wait_task(api, "refresh", zt["reqId"], timeout, 0.005)
        t1 = time.monotonic()
        held = sum(1 for u in st.get("urls", []) for e in u.get("edges", []) if e.get("was_cached"))
        ok = st["status"] == "done" and st.get("pairs_success") == len(edges)
        if not ok:
            bad += 1
            emit(f"refresh {i} did not end well: status={st['status']}")
            emit("\n".join(edge_lines(st)))
        p = st.get("propagation_ms")
        emit(f"{i} {zt['reqId']} {p} {(t1 - t0) * 1000:.1f} {st.get('pairs_success')}/"
             f"{st.get('pairs_total')} {held}")
        if ok and p is not None:
            prop.append(p)
            wall.append(round((t1 - t0) * 1000, 1))
    after = origin_counts(origin)
    emit(f"origin requests during the refreshes: "
         f"{ {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)} }")
    emit(f"refreshes not done on every edge: {bad}")
    emit(summary(f"N={len(edges)} propagation_ms (server)", prop))
    emit(summary(f"N={len(edges)} client_ms (POST to seeing done, 5 ms polls)", wall))
    # Secondary: before each refresh every edge holds the object again (a GET through each edge
    # fills it from the origin; GETs repeat until the edge answers HIT), so every purge removes
    # a cached object on every edge, not only the first one.
    if int(rewarm) > 0:
        emit(f"--- rewarmed: {rewarm} refreshes, each after every edge holds /a.bin again")
        emit("i reqId propagation_ms client_ms pairs_success/pairs_total edges_that_held_it")
        prop2, wall2 = [], []
        for i in range(1, int(rewarm) + 1):
            for addr in edges:
                deadline = time.monotonic() + 10
                while True:
                    status, xcache, body = edge_get(addr, domain, "/a.bin")
                    if status == 200 and (xcache or "").upper() == "HIT":
                        break
                    if time.monotonic() > deadline:
                        raise SystemExit(f"edge {addr} does not hold /a.bin 10 s after a GET "
                                         f"(last: {status} {xcache})")
                    time.sleep(0.005)
            t0 = time.monotonic()
            zt = api.call("POST", "/refresh", {"urls": [url]})
            st = wait_task(api, "refresh", zt["reqId"], timeout, 0.005)
            t1 = time.monotonic()
            held = sum(1 for u in st.get("urls", []) for e in u.get("edges", [])
                       if e.get("was_cached"))
            ok = st["status"] == "done" and st.get("pairs_success") == len(edges)
            if not ok:
                bad += 1
                emit(f"refresh {i} did not end well: status={st['status']}")
                emit("\n".join(edge_lines(st)))
            p = st.get("propagation_ms")
            emit(f"{i} {zt['reqId']} {p} {(t1 - t0) * 1000:.1f} {st.get('pairs_success')}/"
                 f"{st.get('pairs_total')} {held}")
            if ok and p is not None:
                prop2.append(p)
                wall2.append(round((t1 - t0) * 1000, 1))
        emit(f"refreshes not done on every edge: {bad}")
        emit(summary(f"N={len(edges)} rewarmed propagation_ms (server)", prop2))
        emit(summary(f"N={len(edges)} rewarmed client_ms (POST to seeing done, 5 ms polls)", wall2))
    with open(out, "a") as f:
        f.write("\n".join(lines) + "\n")
    if bad:
        raise SystemExit(f"{bad} refreshes did not end done on every edge")

def cmd_shield(base, user_password, domain, origin, shield, children, timeout, out):
    api = Api(base, login(base, "bench", user_password))
    url = f"http://{domain}/big.bin"
    children = children.split(",")
    expected = hashlib.sha256(random.Random(10).randbytes(10 << 20)).hexdigest()
    lines = []
    emit = lambda s: (lines.append(s), print(s, flush=True))
    before = origin_counts(origin)
    emit(f"origin requests before the prefetch: {before}")
    t0 = time.monotonic()
    zt = api.call("POST", "/prefetch", {"urls": [url]})
    st = wait_task(api, "prefetch", zt["reqId"], timeout, 0.005)
    t1 = time.monotonic()
    emit(f"prefetch {url} reqId={zt['reqId']}: status={st['status']} "
         f"pairs_success={st.get('pairs_success')}/{st.get('pairs_total')} "
         f"POST-to-done={(t1 - t0) * 1000:.1f} ms (server: created_at={st.get('created_at')} "
         f"finished_at={st.get('finished_at')})")
    emit("\n".join(edge_lines(st)))
    after = origin_counts(origin)
    big = after.get("GET /big.bin", 0) - before.get("GET /big.bin", 0)
    head = after.get("HEAD /big.bin", 0) - before.get("HEAD /big.bin", 0)
    emit(f"origin requests for /big.bin during the prefetch: GET {big}, HEAD {head}")
    good = 0
    for name, addr in [("shield", shield)] + [(f"child-{i + 1}", a) for i, a in enumerate(children)]:
        status, xcache, body = edge_get(addr, domain, "/big.bin")
        digest = hashlib.sha256(body).hexdigest()
        right = status == 200 and (xcache or "").upper() == "HIT" and len(body) == 10 << 20 \
            and digest == expected
        good += right and name != "shield"
        emit(f"  GET {name} ({addr}): {status} X-Cache={xcache} length={len(body)} "
             f"sha256={'ok' if digest == expected else 'WRONG'}")
    final = origin_counts(origin)
    emit(f"origin requests for /big.bin after the GETs: "
         f"GET {final.get('GET /big.bin', 0) - before.get('GET /big.bin', 0)}")
    emit(f"SUMMARY N={len(children)}: status={st['status']} origin GET /big.bin={big} "
         f"POST-to-done={(t1 - t0) * 1000:.1f} ms children HIT with 10 MiB right bytes="
         f"{good}/{len(children)}")
    with open(out, "a") as f:
        f.write("\n".join(lines) + "\n")
    if st["status"] != "done" or good != len(children):
        raise SystemExit("the shield prefetch did not end with every child holding the object")

if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"setup": cmd_setup, "edges_up": cmd_edges_up, "fanout": cmd_fanout,
     "shield": cmd_shield}[command](*args)
PY

# ---------------------------------------------------------------------------------------------
# Waits until FILE has a line matching the sed expression and prints what it captured; fails
# after the timeout or when the process (PID) is gone.
wait_line() {
    local file=$1 expr=$2 pid=$3 what=$4 found
    for _ in $(seq $((start_timeout * 10))); do
        found=$(sed -n "$expr" "$file" 2>/dev/null | head -n1)
        [ -n "$found" ] && { echo "$found"; return 0; }
        kill -0 "$pid" 2>/dev/null || { cat "$file" >&2; die "$what exited before it was ready"; }
        sleep 0.1
    done
    cat "$file" >&2
    die "$what did not print its start line within ${start_timeout}s"
}

# Runs one scenario; kind is fanout or shield, n the number of (child) edges.
run_scenario() {
    local kind=$1 n=$2 dir=$work/$1-$2
    mkdir -p "$dir"
    local admin_password user_password domain=bench.example.com
    admin_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    user_password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')
    local result=$out/$kind-$n.txt
    {
        echo "# scale_out.sh $kind:$n, $(date -u +%FT%TZ)"
        echo "# commit $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')" \
             "(work tree: $(git -C "$repo" status --short 2>/dev/null | wc -l) changed files)," \
             "binary $(stat -c %y "$bin" | cut -d. -f1)"
        echo "# $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')," \
             "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    } >"$result"

    log "$kind:$n: origin"
    python3 "$work/origin.py" "$dir/origin.port" >"$dir/origin.log" 2>&1 &
    pids+=($!)
    local origin_pid=$! origin_port=
    for _ in $(seq 100); do [ -s "$dir/origin.port" ] && break; sleep 0.1; done
    origin_port=$(cat "$dir/origin.port" 2>/dev/null || true)
    [ -n "$origin_port" ] || { cat "$dir/origin.log" >&2; die "the origin did not start"; }
    kill -0 "$origin_pid" || die "the origin exited"
    local origin=http://127.0.0.1:$origin_port

    log "$kind:$n: api"
    PRECACHE_ADMIN_PASSWORD=$admin_password "$bin" api --data-dir "$dir/api" \
        --api-listen 127.0.0.1:0 >"$dir/api.log" 2>&1 &
    pids+=($!)
    local api_pid=$! api_addr
    api_addr=$(wait_line "$dir/api.log" 's/.*precache: serving api=http:\/\/\([0-9.:]*\).*/\1/p' \
               $api_pid "precache api")
    local base=http://$api_addr

    # Edges: created (and started) parents first, so children learn the shield's address.
    local names=()
    if [ "$kind" = shield ]; then names+=(shield); fi
    for i in $(seq "$n"); do
        if [ "$kind" = shield ]; then names+=("child-$i"); else names+=("edge-$i"); fi
    done
    local admin_token
    admin_token=$(curl -fsS -X POST "$base/cdn_api/auth/tokens" \
        -d "{\"username\": \"admin\", \"password\": \"$admin_password\"}" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["zt_api"]["token"]["id"])')
    declare -A data_addr edge_pids
    local name parent token answer edge_pid line
    log "$kind:$n: ${#names[@]} edges"
    for name in "${names[@]}"; do
        parent=null
        [ "$kind" = shield ] && [ "$name" != shield ] && parent='"shield"'
        answer=$(curl -sS -w '\n%{http_code}' -X POST "$base/cdn_api/edges" \
            -H "X-Auth-Token: $admin_token" -d "{\"name\": \"$name\", \"parent\": $parent}")
        [ "$(tail -n1 <<<"$answer")" = 201 ] ||
            die "POST /cdn_api/edges {\"name\": \"$name\", \"parent\": $parent}: $answer"
        token=$(head -n -1 <<<"$answer" |
            python3 -c 'import json,sys; print(json.load(sys.stdin)["zt_api"]["join_token"])')
        # `=`: a join token is base64url and may start with '-', which clap would take for a flag.
        "$bin" edge --control "$base" --name "$name" --join-token="$token" \
            --data-dir "$dir/$name" --edge-listen 127.0.0.1:0 --edge-admin-listen 127.0.0.1:0 \
            --edge-threads 1 --cache-size 1GiB --cache-min-free 0 >"$dir/$name.log" 2>&1 &
        pids+=($!)
        edge_pid=$!
        if [ "$name" = shield ]; then
            # Children are created only once the shield has joined (its address is known).
            data_addr[$name]=$(wait_line "$dir/$name.log" \
                's/.*precache: serving edge=http:\/\/\([0-9.:]*\) edge_admin=.*/\1/p' \
                $edge_pid "edge $name")
        else
            edge_pids[$name]=$edge_pid
        fi
    done
    for name in "${names[@]}"; do
        [ "$name" = shield ] && continue
        data_addr[$name]=$(wait_line "$dir/$name.log" \
            's/.*precache: serving edge=http:\/\/\([0-9.:]*\) edge_admin=.*/\1/p' \
            "${edge_pids[$name]}" "edge $name")
    done
    local joined
    joined=$(IFS=,; echo "${names[*]}")
    python3 "$work/drive.py" edges_up "$base" "$admin_password" "$joined" $start_timeout

    log "$kind:$n: user, quota, domain (origin $origin)"
    python3 "$work/drive.py" setup "$base" "$admin_password" "$user_password" "$origin" "$domain"

    # Every edge routes the domain (a probe the origin answers 204, never cached).
    for name in "${names[@]}"; do
        local code=
        for _ in $(seq $((start_timeout * 10))); do
            code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $domain" \
                   "http://${data_addr[$name]}/__probe" || true)
            [ "$code" = 204 ] && break
            sleep 0.1
        done
        [ "$code" = 204 ] || die "edge $name answers $code for the registered domain after ${start_timeout}s"
    done
    if [ "$kind" = shield ]; then
        # Children keep the shield's address in parent.txt once the control plane told them.
        for name in "${names[@]}"; do
            [ "$name" = shield ] && continue
            for _ in $(seq $((start_timeout * 10))); do
                [ "$(cat "$dir/$name/parent.txt" 2>/dev/null)" = "${data_addr[shield]}" ] && break
                sleep 0.1
            done
            [ "$(cat "$dir/$name/parent.txt" 2>/dev/null)" = "${data_addr[shield]}" ] ||
                die "edge $name does not know its parent (parent.txt: $(cat "$dir/$name/parent.txt" 2>/dev/null))"
        done
    fi
    echo "# load when measuring starts: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$result"

    local edge_list=()
    for name in "${names[@]}"; do
        [ "$name" = shield ] || edge_list+=("${data_addr[$name]}")
    done
    local edges_csv
    edges_csv=$(IFS=,; echo "${edge_list[*]}")
    log "$kind:$n: measuring"
    if [ "$kind" = fanout ]; then
        python3 "$work/drive.py" fanout "$base" "$user_password" "$domain" "$origin" \
            "$edges_csv" "$refreshes" "$rewarm" $task_timeout "$result"
    else
        python3 "$work/drive.py" shield "$base" "$user_password" "$domain" "$origin" \
            "${data_addr[shield]}" "$edges_csv" $task_timeout "$result"
    fi

    # Resident memory of each process after the scenario.
    local rss_api rss_edges=0 rss_max=0 kib pid
    rss_api=$(awk '/VmRSS/ {print $2}' /proc/$api_pid/status)
    for pid in "${pids[@]}"; do
        [ "$pid" = "$api_pid" ] || [ "$pid" = "$origin_pid" ] && continue
        kib=$(awk '/VmRSS/ {print $2}' /proc/"$pid"/status 2>/dev/null || echo 0)
        rss_edges=$((rss_edges + kib))
        [ "$kib" -gt "$rss_max" ] && rss_max=$kib
    done
    echo "RSS after the scenario: api $((rss_api / 1024)) MiB; edges $((rss_edges / 1024)) MiB" \
         "in all, largest $((rss_max / 1024)) MiB" | tee -a "$result"
    # Warnings and errors the precache processes logged.
    local logged
    # (pingora's "no header compression dictionary loaded", once per edge at start, left out)
    local dictionary
    dictionary=$(cat "$dir"/api.log "$dir"/shield.log "$dir"/edge-*.log "$dir"/child-*.log \
                 2>/dev/null | grep -c 'no header compression dictionary' || true)
    logged=$(cat "$dir"/api.log "$dir"/shield.log "$dir"/edge-*.log "$dir"/child-*.log \
             2>/dev/null | grep -E 'WARN|ERROR' | grep -v 'no header compression dictionary' |
             head -n 20 || true)
    echo "precache WARN/ERROR log lines (first 20; $dictionary lines of pingora's start-up" \
         "\"no header compression dictionary loaded\" not shown): ${logged:-none}" | tee -a "$result"
    stop_all
}

log "output: $out; scratch: $work"
rm -f "$out"/fanout.txt "$out"/shield.txt
for scenario in $scenarios; do
    kind=${scenario%%:*}
    n=${scenario#*:}
    case $kind in fanout|shield) ;; *) die "unknown scenario $scenario" ;; esac
    run_scenario "$kind" "$n"
    cat "$out/$kind-$n.txt" >>"$out/$kind.txt"
    echo >>"$out/$kind.txt"
done
failed=0
log "done: $out"
