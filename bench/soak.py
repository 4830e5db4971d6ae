#!/usr/bin/env python3
"""Soak driver for bench/soak.sh (python3 standard library only).

Two roles:

  soak.py origin --port P
      A threaded origin: every path is an object of 1-16 KiB whose bytes follow from its path
      (so the client can check what the edge sends), cacheable for a day, with an ETag (a
      revalidation is a bodiless 304). Paths under /c/ answer after 300 ms, so concurrent misses
      on them overlap (collapsing). GET /__stats answers its request counts per path (not
      counted itself).

  soak.py run --bin BIN --work DIR --out DIR --minutes N ...
      Starts `BIN serve` on DIR/data, creates an account and a domain, and drives fixed-rate mixed
      load for N minutes from two niced worker processes (submissions + status queries, edge
      GETs), restarting the server (SIGTERM, wait for exit, start on the same data dir) every
      --restart-every minutes. Each minute it samples the server (RSS, open files, threads, CPU,
      /metrics gauges, data dir size) and the machine (load, busiest processes). At the end it
      queries every reqId that was answered ret 0 until each has ended, asks the origin for its
      counts and writes soak.csv, machine.csv, summary.txt and summary.json in --out.
"""

import argparse
import collections
import http.client
import http.server
import json
import multiprocessing
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import zlib

DOMAIN = "soak.example.com"


# ---------------------------------------------------------------------------------------------
# Origin


def object_bytes(path):
    """The body of an object: its path repeated up to a size of 1-16 KiB chosen by the path."""
    size = 1024 * (1 + zlib.crc32(path.encode()) % 16)
    unit = (path + "\n").encode()
    return (unit * (size // len(unit) + 1))[:size]


def run_origin(port):
    counts = collections.Counter()
    lock = threading.Lock()

    class Origin(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_HEAD(self):
            self.answer(head=True)

        def do_GET(self):
            self.answer(head=False)

        def answer(self, head):
            path = self.path.split("?", 1)[0]
            if path == "/__stats":
                with lock:
                    body = json.dumps(dict(counts)).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            with lock:
                counts[path] += 1
            if path.startswith("/c/"):
                time.sleep(0.3)
            body = object_bytes(path)
            etag = '"%08x"' % zlib.crc32(body)
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Cache-Control", "max-age=86400")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "max-age=86400")
            self.send_header("ETag", etag)
            self.send_header("Last-Modified", "Tue, 01 Dec 2026 00:00:00 GMT")
            self.end_headers()
            if not head:
                self.wfile.write(body)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Origin)
    server.daemon_threads = True
    server.request_queue_size = 256
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    server.serve_forever()


# ---------------------------------------------------------------------------------------------
# HTTP client helpers


class Client:
    """One keep-alive connection; reconnects after any error."""

    def __init__(self, host, port, timeout=15.0):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = None

    def request(self, method, path, body=None, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            data = resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, resp.headers, data
        except BaseException:
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except OSError:
                pass
            self.conn = None


def error_kind(exc):
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timeout"
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected,
                        http.client.IncompleteRead, ConnectionAbortedError)):
        return "reset"
    return "other:" + type(exc).__name__


def api_call(client, method, path, token=None, body=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    data = json.dumps(body).encode() if body is not None else None
    status, _, raw = client.request(method, "/cdn_api" + path, data, headers)
    try:
        zt = json.loads(raw)["zt_api"]
    except (ValueError, KeyError, TypeError):
        zt = {"ret": None, "msg": raw[:200].decode("utf-8", "replace")}
    return status, zt


class Recorder:
    """Latencies per (kind, minute) and every error with its time, kept in the worker."""

    def __init__(self, t0):
        self.t0 = t0
        self.lat = collections.defaultdict(list)
        self.errors = []
        self.lock = threading.Lock()

    def minute(self, t):
        return int((t - self.t0) // 60) + 1

    def ok(self, kind, started, ended):
        with self.lock:
            self.lat["%s|%d" % (kind, self.minute(started))].append(round((ended - started) * 1000, 3))

    def error(self, kind, what, ended, detail=""):
        with self.lock:
            self.errors.append((round(ended - self.t0, 3), kind, what, detail[:200]))

    def dump(self, path, extra=None):
        # Serialised under the lock: the recording threads add keys while this runs. The extra
        # counters are copied first (dict() of a dict is one step under the GIL).
        extra = {k: dict(v) for k, v in (extra or {}).items()}
        with self.lock:
            text = json.dumps({"lat": self.lat, "errors": self.errors, **extra})
        with open(path + ".tmp", "w") as f:
            f.write(text)
        os.replace(path + ".tmp", path)


def paced(stop, rate, body):
    """Calls body() `rate` times a second on a fixed schedule until stop is set; when more than
    a second behind (the server was restarting and calls waited), the schedule restarts from now
    instead of bursting to catch up. Returns the number of ticks skipped that way."""
    interval = 1.0 / rate
    nxt = time.monotonic() + random.random() * interval
    skipped = 0
    while not stop.is_set():
        now = time.monotonic()
        if nxt > now:
            stop.wait(nxt - now)
            if stop.is_set():
                break
        elif now - nxt > 1.0:
            skipped += int((now - nxt) / interval)
            nxt = now
        body()
        nxt += interval
    return skipped


# ---------------------------------------------------------------------------------------------
# Load workers (separate processes, niced)

HOT_DIRS = 10
HOT_PER_DIR = 50


def hot_url(d=None, i=None):
    d = random.randrange(HOT_DIRS) if d is None else d
    i = random.randrange(HOT_PER_DIR) if i is None else i
    return "http://%s/h/%d/%d.bin" % (DOMAIN, d, i)


def api_worker(cfg, stop, out_path):
    os.nice(cfg["nice"])
    rec = Recorder(cfg["t0"])
    token = cfg["token"]
    reqids = []  # (reqId, route)
    reqids_lock = threading.Lock()
    reqlog = open(cfg["reqids_file"], "a", buffering=1)
    counters = collections.Counter()
    seq = [0]

    def submission_body(tid):
        r = random.random()
        if r < 0.50:
            urls = [hot_url() for _ in range(random.randint(0, 3))]
            for _ in range(random.randint(1, 2)):
                if cfg["new_objects"]:
                    seq[0] += 1
                    urls.append("http://%s/p/%d-%d.bin" % (DOMAIN, tid, seq[0]))
                else:
                    urls.append(hot_url())
            return "prefetch", "prefetch", {"urls": urls}
        if r < 0.75:
            return "refresh", "refresh_urls", {
                "urls": [hot_url() for _ in range(random.randint(1, 5))],
                "mode": random.choice(["delete", "invalidate"])}
        if r < 0.80:
            return "refresh", "refresh_dir", {
                "dirs": ["http://%s/h/%d/" % (DOMAIN, random.randrange(HOT_DIRS))]}
        return "refresh", "refresh_warm", {
            "urls": [hot_url() for _ in range(random.randint(1, 3))], "prefetch": True}

    def submitter(tid):
        client = Client("127.0.0.1", cfg["api_port"])

        def one():
            route, label, body = submission_body(tid)
            started = time.time()
            try:
                status, zt = api_call(client, "POST", "/" + route, token, body)
            except Exception as exc:  # noqa: BLE001 - every failure is counted by kind
                rec.error("submit", error_kind(exc), time.time(), repr(exc))
                return
            ended = time.time()
            if status == 200 and zt.get("ret") == 0 and zt.get("reqId"):
                rec.ok("submit", started, ended)
                with reqids_lock:
                    reqids.append((zt["reqId"], route))
                    counters[label] += 1
                reqlog.write("%s %s %s %.3f\n" % (zt["reqId"], route, label, ended - cfg["t0"]))
            else:
                rec.error("submit", "http%s_ret%s" % (status, zt.get("ret")), ended,
                          str(zt.get("msg")))

        return paced(stop, cfg["submit_rate"] / cfg["submit_threads"], one)

    def status_querier():
        client = Client("127.0.0.1", cfg["api_port"])

        def one():
            with reqids_lock:
                if not reqids:
                    return
                if random.random() < 0.7:
                    req_id, route = random.choice(reqids[-200:])
                else:
                    req_id, route = random.choice(reqids)
            started = time.time()
            try:
                status, zt = api_call(client, "GET", "/%s/%s" % (route, req_id), token)
            except Exception as exc:  # noqa: BLE001
                rec.error("status", error_kind(exc), time.time(), repr(exc))
                return
            ended = time.time()
            if status == 200 and zt.get("ret") == 0:
                rec.ok("status", started, ended)
            else:
                rec.error("status", "http%s_ret%s" % (status, zt.get("ret")), ended,
                          "%s %s" % (req_id, zt.get("msg")))

        return paced(stop, cfg["status_rate"] / cfg["status_threads"], one)

    skipped = collections.Counter()
    threads = []

    def run(name, fn, *args):
        def target():
            skipped[name] += fn(*args)
        t = threading.Thread(target=target, daemon=True)
        t.start()
        threads.append(t)

    # A rate of 0 leaves that kind out (to tell which load a growth follows).
    for tid in range(cfg["submit_threads"] if cfg["submit_rate"] > 0 else 0):
        run("submit", submitter, tid)
    for _ in range(cfg["status_threads"] if cfg["status_rate"] > 0 else 0):
        run("status", status_querier)
    while not stop.is_set():
        stop.wait(30)
        rec.dump(out_path, {"skipped": skipped, "submissions": counters})
    for t in threads:
        t.join(30)
    reqlog.close()
    rec.dump(out_path, {"skipped": skipped, "submissions": counters})


def edge_worker(cfg, stop, out_path):
    os.nice(cfg["nice"])
    rec = Recorder(cfg["t0"])
    seen = collections.Counter()
    seen_lock = threading.Lock()

    def get(client, kind, path):
        started = time.time()
        try:
            status, headers, body = client.request("GET", path, headers={"Host": DOMAIN})
        except Exception as exc:  # noqa: BLE001
            rec.error(kind, error_kind(exc), time.time(), repr(exc))
            return
        ended = time.time()
        if status != 200:
            rec.error(kind, "http%s" % status, ended, path)
        elif body != object_bytes(path):
            rec.error(kind, "wrong_body", ended, "%s %d bytes" % (path, len(body)))
        else:
            rec.ok(kind, started, ended)
            cache = (headers.get("X-Cache") or "none").split(",")[0].strip().upper()
            with seen_lock:
                seen["%s|%s" % (kind, cache)] += 1

    def getter(tid):
        client = Client("127.0.0.1", cfg["edge_port"])
        n = [0]

        def one():
            if cfg["new_objects"] and random.random() < cfg["miss_share"]:
                n[0] += 1
                get(client, "edge_miss", "/m/%d-%d.bin" % (tid, n[0]))
            else:
                get(client, "edge_hot", hot_url().split(DOMAIN, 1)[1])

        return paced(stop, cfg["edge_rate"] / cfg["edge_threads"], one)

    def collapser():
        # Every 2 s, four concurrent GETs of one new object that the origin answers after
        # 300 ms: the edge should fetch it once.
        clients = [Client("127.0.0.1", cfg["edge_port"]) for _ in range(4)]
        n = [0]

        def one():
            n[0] += 1
            path = "/c/%d.bin" % n[0]
            ts = [threading.Thread(target=get, args=(c, "edge_collapse", path)) for c in clients]
            for t in ts:
                t.start()
            for t in ts:
                t.join()

        return paced(stop, 0.5, one)

    skipped = collections.Counter()
    threads = []

    def run(name, fn, *args):
        def target():
            skipped[name] += fn(*args)
        t = threading.Thread(target=target, daemon=True)
        t.start()
        threads.append(t)

    for tid in range(cfg["edge_threads"] if cfg["edge_rate"] > 0 else 0):
        run("edge", getter, tid)
    if cfg["new_objects"] and cfg["edge_rate"] > 0:
        run("collapse", collapser)
    while not stop.is_set():
        stop.wait(30)
        rec.dump(out_path, {"skipped": skipped, "cache": seen})
    for t in threads:
        t.join(30)
    rec.dump(out_path, {"skipped": skipped, "cache": seen})


# ---------------------------------------------------------------------------------------------
# The server and its sampling


class Server:
    def __init__(self, args):
        self.args = args
        self.proc = None
        self.log = open(os.path.join(args.work, "server.log"), "ab")

    def start(self):
        a = self.args
        env = dict(os.environ, PRECACHE_ADMIN_PASSWORD=a.password,
                   RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.proc = subprocess.Popen(
            [a.bin, "serve", "--data-dir", os.path.join(a.work, "data"),
             "--api-listen", "127.0.0.1:%d" % a.api_port,
             "--edge-listen", "127.0.0.1:%d" % a.edge_port,
             "--edge-admin-listen", "127.0.0.1:%d" % a.edge_admin_port],
            stdout=self.log, stderr=self.log, env=env)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("soak: the server exited at start (see server.log)")
            try:
                status, _ = api_call(Client("127.0.0.1", a.api_port, 2), "GET", "/health")
                if status == 200:
                    Client("127.0.0.1", a.edge_port, 2).request("GET", "/", headers={"Host": DOMAIN})
                    return
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(0.05)
        raise SystemExit("soak: the server did not answer within 60 s")

    def stop(self, timeout=120):
        """SIGTERM, then wait; returns (seconds to exit, exit code, killed)."""
        started = time.time()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
            return time.time() - started, code, False
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return time.time() - started, self.proc.wait(), True


def read_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            out[key] = value.strip()
    return out


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def all_cpu():
    """CPU ticks and name of every process."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                raw = f.read()
            comm = raw[raw.index("(") + 1:raw.rindex(")")]
            fields = raw.rsplit(")", 1)[1].split()
            out[int(name)] = (comm, int(fields[11]) + int(fields[12]))
        except (OSError, ValueError, IndexError):
            pass
    return out


def dir_bytes(path):
    total = files = 0
    for root, _, names in os.walk(path):
        for n in names:
            try:
                st = os.lstat(os.path.join(root, n))
            except OSError:
                continue
            total += st.st_blocks * 512
            files += 1
    return total, files


def metrics(port):
    try:
        status, _, raw = Client("127.0.0.1", port, 5).request("GET", "/metrics")
    except (OSError, http.client.HTTPException):
        return {}
    wanted = ("precache_engine_pairs", "precache_edge_fills_in_progress",
              "precache_edge_cache_objects", "precache_edge_cache_bytes{", "precache_edge_cache_bytes ")
    out = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith("#"):
            continue
        if line.startswith(wanted) or line.startswith("precache_tasks_finished_total"):
            name, _, value = line.rpartition(" ")
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def pct(values, p):
    if not values:
        return ""
    values = sorted(values)
    k = min(len(values) - 1, max(0, int(round(p / 100.0 * len(values) + 0.5)) - 1))
    return "%.1f" % values[k]


def run_main(args):
    os.makedirs(args.out, exist_ok=True)
    server = Server(args)
    children = []

    def stop_all():
        for c in children:
            if c.is_alive():
                c.kill()
        if server.proc is not None and server.proc.poll() is None:
            server.proc.kill()
            server.proc.wait()

    def on_term(*_):
        stop_all()
        os._exit(143)

    signal.signal(signal.SIGTERM, on_term)
    try:
        return soak(args, server, children)
    finally:
        stop_all()


def soak(args, server, children):

    server.start()
    api = Client("127.0.0.1", args.api_port)
    _, zt = api_call(api, "POST", "/auth/tokens", body={"username": "admin", "password": args.password})
    admin = zt["token"]["id"]
    for method, path, body in [
        ("POST", "/users", {"name": "soak", "password": args.password, "role": "user"}),
        ("PUT", "/quota/soak", {"prefetch_urls_per_day": 10000000, "refresh_urls_per_day": 10000000,
                                "refresh_dirs_per_day": 10000000, "requests_per_second": 0}),
        ("POST", "/domains", {"domain": DOMAIN, "origin": "http://127.0.0.1:%d" % args.origin_port,
                              "owner": "soak"}),
    ]:
        status, zt = api_call(api, method, path, admin, body)
        if zt.get("ret") != 0:
            raise SystemExit("soak: %s %s: %s %s" % (method, path, status, zt))
    _, zt = api_call(api, "POST", "/auth/tokens", body={"username": "soak", "password": args.password})
    token = zt["token"]["id"]

    t0 = time.time()
    cfg = {
        "t0": t0, "token": token, "api_port": args.api_port, "edge_port": args.edge_port,
        "nice": args.nice, "reqids_file": os.path.join(args.work, "reqids.txt"),
        "submit_rate": args.submit_rate, "submit_threads": 4,
        "status_rate": args.status_rate, "status_threads": 4,
        "edge_rate": args.edge_rate, "edge_threads": 6, "miss_share": args.miss_share,
        "new_objects": not args.no_new_objects,
    }
    stop = multiprocessing.Event()
    api_out = os.path.join(args.work, "api-worker.json")
    edge_out = os.path.join(args.work, "edge-worker.json")
    workers = [multiprocessing.Process(target=api_worker, args=(cfg, stop, api_out), daemon=True),
               multiprocessing.Process(target=edge_worker, args=(cfg, stop, edge_out), daemon=True)]
    children.extend(workers)
    for w in workers:
        w.start()

    samples = []
    restarts = []
    machine_rows = []
    fields = ["minute", "t_s", "pid", "rss_kb", "rss_peak_kb", "fds", "threads", "server_cpu_pct",
              "loadgen_cpu_pct", "held", "in_flight", "parked", "fills_in_progress",
              "cache_objects", "data_dir_mb", "data_dir_files", "tasks_accepted",
              "origin_requests", "load1", "load5"]
    live = open(os.path.join(args.out, "samples-live.csv"), "w", buffering=1)
    live.write(",".join(fields) + "\n")
    prev_server = (server.proc.pid, cpu_ticks(server.proc.pid), time.time())
    prev_loadgen = sum(cpu_ticks(w.pid) for w in workers)
    prev_all = all_cpu()
    hz = os.sysconf("SC_CLK_TCK")
    origin = Client("127.0.0.1", args.origin_port)

    for minute in range(1, args.minutes + 1):
        delay = t0 + 60 * minute - time.time()
        if delay > 0:
            time.sleep(delay)
        for w in workers:
            if not w.is_alive():
                raise SystemExit("soak: a load worker died (exit %s); see the output above" % w.exitcode)
        now = time.time()
        pid = server.proc.pid
        st = read_status(pid)
        ticks = cpu_ticks(pid)
        ppid, pticks, pt = prev_server
        server_cpu = (ticks - (pticks if ppid == pid else 0)) / hz / (now - pt) * 100
        prev_server = (pid, ticks, now)
        lg = sum(cpu_ticks(w.pid) for w in workers)
        loadgen_cpu = (lg - prev_loadgen) / hz / 60 * 100
        prev_loadgen = lg
        cur_all = all_cpu()
        by_comm = collections.Counter()
        for p, (comm, t) in cur_all.items():
            before = prev_all.get(p)
            by_comm[comm] += t - (before[1] if before and before[0] == comm else 0)
        prev_all = cur_all
        top = " ".join("%s:%.0f%%" % (c, t / hz / 60 * 100) for c, t in by_comm.most_common(6) if t > 0)
        m = metrics(args.api_port)
        size, files = dir_bytes(os.path.join(args.work, "data"))
        try:
            with open(cfg["reqids_file"]) as f:
                accepted = sum(1 for _ in f)
        except OSError:
            accepted = 0
        try:
            _, _, raw = origin.request("GET", "/__stats")
            origin_requests = sum(json.loads(raw).values())
        except (OSError, http.client.HTTPException, ValueError):
            origin_requests = ""
        with open("/proc/loadavg") as f:
            load = f.read().split()
        row = {
            "minute": minute, "t_s": round(now - t0, 1), "pid": pid,
            "rss_kb": int(st["VmRSS"].split()[0]), "rss_peak_kb": int(st["VmHWM"].split()[0]),
            "fds": len(os.listdir("/proc/%d/fd" % pid)), "threads": int(st["Threads"]),
            "server_cpu_pct": round(server_cpu, 1), "loadgen_cpu_pct": round(loadgen_cpu, 1),
            "held": m.get('precache_engine_pairs{state="held"}', ""),
            "in_flight": m.get('precache_engine_pairs{state="in_flight"}', ""),
            "parked": m.get('precache_engine_pairs{state="parked"}', ""),
            "fills_in_progress": m.get("precache_edge_fills_in_progress", ""),
            "cache_objects": m.get("precache_edge_cache_objects", ""),
            "data_dir_mb": round(size / 1048576, 1), "data_dir_files": files,
            "tasks_accepted": accepted, "origin_requests": origin_requests,
            "load1": load[0], "load5": load[1],
        }
        samples.append(row)
        machine_rows.append((minute, load[0], load[1], load[2], top))
        live.write(",".join(str(row[k]) for k in fields) + "\n")
        print("soak: minute %d rss=%s kB fds=%s threads=%s held=%s in_flight=%s load=%s top=%s" % (
            minute, row["rss_kb"], row["fds"], row["threads"], row["held"], row["in_flight"],
            load[0], top), flush=True)
        if minute % args.restart_every == 0 and minute < args.minutes:
            began = time.time()
            took, code, killed = server.stop()
            server.start()
            ready = time.time()
            restarts.append({"minute": minute, "sigterm_t": round(began - t0, 3),
                             "exit_s": round(took, 3), "exit_code": code, "killed": killed,
                             "ready_t": round(ready - t0, 3), "down_s": round(ready - began, 3)})
            print("soak: restarted after minute %d: exit in %.2f s (code %s%s), answering again "
                  "after %.2f s" % (minute, took, code, ", killed" if killed else "", ready - began),
                  flush=True)
            prev_server = (server.proc.pid, cpu_ticks(server.proc.pid), time.time())

    stop.set()
    for w in workers:
        w.join(120)
    load_end = time.time()
    print("soak: load stopped; checking every task", flush=True)

    # Every reqId answered ret 0: found, and ended.
    tasks = []
    with open(cfg["reqids_file"]) as f:
        for line in f:
            req_id, route, label, _ = line.split()
            tasks.append((req_id, route, label))
    final = {}
    pending = list(tasks)
    lock = threading.Lock()
    check_deadline = time.time() + args.end_wait
    reasons = collections.Counter()
    url_states = collections.Counter()
    while pending and time.time() < check_deadline:
        queue = list(pending)
        still = []

        def checker():
            client = Client("127.0.0.1", args.api_port, 30)
            while True:
                with lock:
                    if not queue:
                        return
                    req_id, route, label = queue.pop()
                try:
                    status, zt = api_call(client, "GET", "/%s/%s" % (route, req_id), token)
                except Exception as exc:  # noqa: BLE001
                    with lock:
                        still.append((req_id, route, label))
                        final[req_id] = {"state": "error:" + error_kind(exc), "label": label}
                    continue
                with lock:
                    if zt.get("ret") != 0:
                        final[req_id] = {"state": "lost:ret%s" % zt.get("ret"), "label": label}
                        continue
                    state = zt.get("status")
                    final[req_id] = {"state": state, "label": label}
                    if state not in ("done", "failed", "cancelled"):
                        still.append((req_id, route, label))
                        continue
                    for u in zt.get("urls", []):
                        url_states["%s|%s" % (u.get("phase", route), u.get("status"))] += 1
                        if u.get("error"):
                            reasons[u["error"]] += 1

        ts = [threading.Thread(target=checker) for _ in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        pending = still
        if pending:
            time.sleep(5)
    check_s = time.time() - load_end

    try:
        _, _, raw = origin.request("GET", "/__stats")
        origin_counts = json.loads(raw)
    except (OSError, http.client.HTTPException, ValueError):
        origin_counts = {}
    final_metrics = metrics(args.api_port)
    took, code, killed = server.stop()

    # Merge the workers' records.
    lat = collections.defaultdict(list)
    errors = []
    extra = {}
    for path in (api_out, edge_out):
        with open(path) as f:
            doc = json.load(f)
        for k, v in doc["lat"].items():
            lat[k].extend(v)
        errors.extend(doc["errors"])
        for k in ("skipped", "submissions", "cache"):
            extra.setdefault(k, {}).update(doc.get(k, {}))

    def in_restart(t):
        return any(r["sigterm_t"] <= t <= r["ready_t"] + 2.0 for r in restarts)

    kinds = ["submit", "status", "edge_hot", "edge_miss", "edge_collapse"]
    err_by_minute = collections.defaultdict(collections.Counter)
    err_steady = collections.Counter()
    err_restart = collections.Counter()
    for t, kind, what, _ in errors:
        err_by_minute[int(t // 60) + 1]["%s:%s" % (kind, what)] += 1
        (err_restart if in_restart(t) else err_steady)["%s:%s" % (kind, what)] += 1

    out_fields = fields + sum([["%s_n" % k, "%s_p50_ms" % k, "%s_p99_ms" % k] for k in kinds], []) + ["errors"]
    with open(os.path.join(args.out, "soak.csv"), "w") as f:
        f.write(",".join(out_fields) + "\n")
        for row in samples:
            mnt = row["minute"]
            for k in kinds:
                v = lat.get("%s|%d" % (k, mnt), [])
                row["%s_n" % k] = len(v)
                row["%s_p50_ms" % k] = pct(v, 50)
                row["%s_p99_ms" % k] = pct(v, 99)
            row["errors"] = " ".join("%s=%d" % kv for kv in sorted(err_by_minute[mnt].items()))
            f.write(",".join(str(row[k]) for k in out_fields) + "\n")
    with open(os.path.join(args.out, "machine.csv"), "w") as f:
        f.write("minute,load1,load5,load15,busiest_processes_cpu_in_the_minute\n")
        for r in machine_rows:
            f.write("%s,%s,%s,%s,%s\n" % r)

    states = collections.Counter(v["state"] for v in final.values())
    states_by_label = collections.Counter("%s|%s" % (v["label"], v["state"]) for v in final.values())
    prefixes = collections.defaultdict(lambda: [0, 0])
    for path, n in origin_counts.items():
        p = path.split("/")[1] if path.count("/") >= 2 else path
        prefixes[p][0] += 1
        prefixes[p][1] += n
    over_once = {p: sum(1 for path, n in origin_counts.items() if path.startswith("/%s/" % p) and n > 1)
                 for p in ("m", "c", "p")}
    summary = {
        "minutes": args.minutes, "t0": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t0)),
        "rates": {"submit": args.submit_rate, "status": args.status_rate, "edge": args.edge_rate,
                  "miss_share": args.miss_share, "new_objects": not args.no_new_objects},
        "restarts": restarts, "final_stop": {"exit_s": round(took, 3), "exit_code": code, "killed": killed},
        "tasks_accepted": len(tasks), "tasks_checked": len(final), "task_states": states,
        "task_states_by_kind": states_by_label, "still_not_ended": len(pending),
        "check_seconds": round(check_s, 1), "url_states": url_states, "failure_reasons": reasons,
        "errors_outside_restarts": err_steady, "errors_in_restart_windows": err_restart,
        "requests_ok": {k: sum(len(v) for kk, v in lat.items() if kk.startswith(k + "|")) for k in kinds},
        "origin": {p: {"paths": v[0], "requests": v[1]} for p, v in sorted(prefixes.items())},
        "origin_paths_fetched_more_than_once": over_once,
        "final_metrics": final_metrics, **extra,
    }
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1, sort_keys=True)
    with open(os.path.join(args.out, "errors-sample.txt"), "w") as f:
        seen = collections.Counter()
        for t, kind, what, detail in errors:
            key = (kind, what, in_restart(t))
            seen[key] += 1
            if seen[key] <= 5:
                f.write("%.3f %s %s restart=%s %s\n" % (t, kind, what, in_restart(t), detail))
    lines = [
        "tasks accepted (ret 0): %d; checked: %d; states: %s" % (len(tasks), len(final), dict(states)),
        "not ended after %.0f s: %d" % (check_s, len(pending)),
        "restarts: %s" % restarts,
        "errors outside restart windows: %s" % dict(err_steady),
        "errors in restart windows: %s" % dict(err_restart),
        "origin (paths, requests) per prefix: %s" % {p: tuple(v) for p, v in sorted(prefixes.items())},
        "origin paths fetched more than once: %s" % over_once,
        "failure reasons: %s" % dict(reasons.most_common(10)),
    ]
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines), flush=True)
    lost = sum(n for s, n in states.items() if s.startswith("lost"))
    return 1 if lost or pending else 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="role", required=True)
    o = sub.add_parser("origin")
    o.add_argument("--port", type=int, required=True)
    r = sub.add_parser("run")
    r.add_argument("--bin", required=True)
    r.add_argument("--work", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--password", required=True)
    r.add_argument("--minutes", type=int, default=30)
    r.add_argument("--restart-every", type=int, default=10)
    r.add_argument("--origin-port", type=int, default=19200)
    r.add_argument("--api-port", type=int, default=19201)
    r.add_argument("--edge-port", type=int, default=19202)
    r.add_argument("--edge-admin-port", type=int, default=19203)
    r.add_argument("--submit-rate", type=float, default=20)
    r.add_argument("--status-rate", type=float, default=100)
    r.add_argument("--edge-rate", type=float, default=300)
    r.add_argument("--miss-share", type=float, default=0.2)
    r.add_argument("--no-new-objects", action="store_true",
                   help="a control: every GET and prefetch on the 500 hot objects (the cache stops "
                        "growing), no collapsing probes")
    r.add_argument("--nice", type=int, default=5)
    r.add_argument("--end-wait", type=float, default=600, help="seconds to wait for every task to end")
    args = p.parse_args()
    if args.role == "origin":
        run_origin(args.port)
        return 0
    return run_main(args)


if __name__ == "__main__":
    sys.exit(main())
