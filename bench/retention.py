#!/usr/bin/env python3
"""Driver for bench/retention.sh (python3 standard library only): a steady load on a running
`precache serve --task-retention ...` and a sample of the database's size every 10 s.

    retention.py --serve-pid PID --data-dir DIR --out DIR --password PW --minutes N \
        --api-port 19300 --origin-port 19302 --files f0.bin,f1.bin,...

Waits for the API to answer, logs in as admin, creates the account `bench` (quotas lifted),
registers `retention.example.com` on the origin and logs in as `bench`. Then for N minutes:

  - about --submit-rate prefetch submissions a second (two threads, keep-alive), each of 1-3 URLs
    drawn from the origin's files (80 %) and paths the origin answers 404 (20 %); the same few
    URLs again and again, so the edge's cache stays small and what grows is the database;
  - about --status-rate status queries a second (`GET /cdn_api/prefetch/{reqId}`) of accepted
    reqIds: half among the last 100 accepted, half among all of them. The answers are counted by
    the reqId's age when asked (under 30 s, 30-60 s, over 60 s) and by outcome (found, 3001 not
    found, other), which shows the deletions from the client's side.

Every 10 s (and once before the load): precache.db and precache.db-wal in bytes and their sum,
`precache_tasks_deleted_total` and `precache_tasks_finished_total` from `GET /metrics`, VmRSS of
the serve process, and, through a read-only sqlite3 connection opened for a moment, the rows in
`tasks` and `audit_log` and the file's page and free-list counts. Writes samples.csv and
summary.txt in --out and prints the summary. Load threads run at nice +5.
"""

import argparse
import collections
import http.client
import json
import os
import random
import sqlite3
import sys
import threading
import time

DOMAIN = "retention.example.com"
USER = "bench"


class Client:
    """One keep-alive connection; reconnects after any error."""

    def __init__(self, port, timeout=15.0):
        self.port, self.timeout, self.conn = port, timeout, None

    def request(self, method, path, body=None, headers=None):
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers or {})
            resp = self.conn.getresponse()
            data = resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            return resp.status, data
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


def api(client, method, path, token=None, body=None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["X-Auth-Token"] = token
    data = json.dumps(body).encode() if body is not None else None
    status, raw = client.request(method, "/cdn_api" + path, data, headers)
    try:
        return status, json.loads(raw)["zt_api"]
    except (ValueError, KeyError, TypeError):
        return status, {"ret": None, "msg": raw[:200].decode("utf-8", "replace")}


def metrics(port):
    """Sums of the counters we want from the API's Prometheus text (labels summed over)."""
    out = {"precache_tasks_deleted_total": 0.0, "precache_tasks_finished_total": 0.0}
    try:
        _, raw = Client(port, 5).request("GET", "/metrics")
    except (OSError, http.client.HTTPException):
        return {k: "" for k in out}
    for line in raw.decode("utf-8", "replace").splitlines():
        if line.startswith("#"):
            continue
        for name in out:
            if line.startswith(name + " ") or line.startswith(name + "{"):
                try:
                    out[name] += float(line.rpartition(" ")[2])
                except ValueError:
                    pass
    return {k: int(v) for k, v in out.items()}


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return ""


def db_rows(path):
    """Rows and pages, read-only, one short read transaction."""
    out = {"tasks_rows": "", "audit_rows": "", "page_count": "", "freelist_count": ""}
    try:
        conn = sqlite3.connect("file:%s?mode=ro" % path, uri=True, timeout=2)
        try:
            for key, sql in (("page_count", "PRAGMA page_count"),
                             ("freelist_count", "PRAGMA freelist_count"),
                             ("tasks_rows", "SELECT count(*) FROM tasks"),
                             ("audit_rows", "SELECT count(*) FROM audit_log")):
                try:
                    out[key] = conn.execute(sql).fetchone()[0]
                except sqlite3.Error:
                    pass
        finally:
            conn.close()
    except sqlite3.Error:
        pass
    return out


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def paced(stop, rate, body):
    """body() `rate` times a second on a fixed schedule; more than a second behind, the schedule
    restarts from now instead of bursting to catch up."""
    interval = 1.0 / rate
    nxt = time.monotonic() + random.random() * interval
    while not stop.is_set():
        now = time.monotonic()
        if nxt > now:
            if stop.wait(nxt - now):
                break
        elif now - nxt > 1.0:
            nxt = now
        body()
        nxt += interval


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--serve-pid", type=int, required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--password", required=True, help="the admin's (PRECACHE_ADMIN_PASSWORD)")
    p.add_argument("--minutes", type=float, default=4)
    p.add_argument("--api-port", type=int, default=19300)
    p.add_argument("--origin-port", type=int, default=19302)
    p.add_argument("--files", required=True, help="comma-separated names the origin serves")
    p.add_argument("--submit-rate", type=float, default=20)
    p.add_argument("--status-rate", type=float, default=20)
    p.add_argument("--sample-every", type=float, default=10)
    p.add_argument("--retention-s", type=float, default=30)
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    db = os.path.join(args.data_dir, "precache.db")
    wal = db + "-wal"

    # Wait for the API.
    deadline = time.time() + 90
    while True:
        try:
            os.kill(args.serve_pid, 0)
        except OSError:
            raise SystemExit("retention: serve exited at start (see serve.log)")
        try:
            status, _ = api(Client(args.api_port, 2), "GET", "/health")
            if status == 200:
                break
        except (OSError, http.client.HTTPException):
            pass
        if time.time() > deadline:
            raise SystemExit("retention: the API did not answer within 90 s")
        time.sleep(0.1)

    setup = Client(args.api_port)
    _, zt = api(setup, "POST", "/auth/tokens", body={"username": "admin", "password": args.password})
    admin = zt["token"]["id"]
    user_pw = "bench-user-pw-" + os.urandom(6).hex()
    for method, path, body in [
        ("POST", "/users", {"name": USER, "password": user_pw, "role": "user"}),
        ("PUT", "/quota/" + USER, {"prefetch_urls_per_day": 100000000, "refresh_urls_per_day": 100000000,
                                   "refresh_dirs_per_day": 100000000, "requests_per_second": 0}),
        ("POST", "/domains", {"domain": DOMAIN, "origin": "http://127.0.0.1:%d" % args.origin_port,
                              "owner": USER}),
    ]:
        status, zt = api(setup, method, path, admin, body)
        if zt.get("ret") != 0:
            raise SystemExit("retention: %s %s: %s %s" % (method, path, status, zt))
    _, zt = api(setup, "POST", "/auth/tokens", body={"username": USER, "password": user_pw})
    token = zt["token"]["id"]
    setup.close()

    files = args.files.split(",")
    lock = threading.Lock()
    accepted = []  # (reqId, monotonic time accepted)
    counts = collections.Counter()
    stop = threading.Event()

    def url():
        if random.random() < 0.8:
            return "http://%s/%s" % (DOMAIN, random.choice(files))
        return "http://%s/missing/%d.bin" % (DOMAIN, random.randrange(20))

    def submitter():
        client = Client(args.api_port)

        def one():
            urls = [url() for _ in range(random.randint(1, 3))]
            try:
                status, zt = api(client, "POST", "/prefetch", token, {"urls": urls})
            except Exception as exc:  # noqa: BLE001 - counted by kind
                with lock:
                    counts["submit_error:" + type(exc).__name__] += 1
                return
            with lock:
                if status == 200 and zt.get("ret") == 0 and zt.get("reqId"):
                    accepted.append((zt["reqId"], time.monotonic()))
                    counts["submit_ok"] += 1
                    counts["urls_ok"] += len(urls)
                else:
                    counts["submit_refused:http%s_ret%s" % (status, zt.get("ret"))] += 1

        paced(stop, args.submit_rate / 2, one)

    def querier():
        client = Client(args.api_port)

        def one():
            with lock:
                if not accepted:
                    return
                if random.random() < 0.5:
                    req_id, t = random.choice(accepted[-100:])
                else:
                    req_id, t = random.choice(accepted)
            age = time.monotonic() - t
            bucket = "<30s" if age < 30 else ("30-60s" if age < 60 else ">60s")
            try:
                status, zt = api(client, "GET", "/prefetch/" + req_id, token)
                ret = zt.get("ret")
                what = "found" if ret == 0 else ("3001" if ret == 3001 else "http%s_ret%s" % (status, ret))
            except Exception as exc:  # noqa: BLE001
                what = "error:" + type(exc).__name__
            with lock:
                counts["status|%s|%s" % (bucket, what)] += 1

        paced(stop, args.status_rate, one)

    fields = ["t_s", "submissions_ok", "urls_ok", "db_bytes", "wal_bytes", "db_plus_wal",
              "tasks_deleted_total", "tasks_finished_total", "tasks_rows", "audit_rows",
              "page_count", "freelist_count", "rss_kb", "load1"]
    samples = []
    live = open(os.path.join(args.out, "samples.csv"), "w", buffering=1)
    live.write(",".join(fields) + "\n")

    def sample(t):
        m = metrics(args.api_port)
        d, w = size(db), size(wal)
        with open("/proc/loadavg") as f:
            load1 = f.read().split()[0]
        with lock:
            ok, urls_ok = counts["submit_ok"], counts["urls_ok"]
        row = {"t_s": round(t, 1), "submissions_ok": ok, "urls_ok": urls_ok, "db_bytes": d,
               "wal_bytes": w, "db_plus_wal": d + w,
               "tasks_deleted_total": m["precache_tasks_deleted_total"],
               "tasks_finished_total": m["precache_tasks_finished_total"],
               "rss_kb": rss_kb(args.serve_pid), "load1": load1, **db_rows(db)}
        samples.append(row)
        live.write(",".join(str(row[k]) for k in fields) + "\n")
        print("retention: t=%5.0fs subs=%5d db=%9d wal=%9d sum=%9d deleted=%5s tasks=%s "
              "audit=%s free=%s/%s rss=%s kB load=%s" % (
                  t, ok, d, w, d + w, row["tasks_deleted_total"], row["tasks_rows"],
                  row["audit_rows"], row["freelist_count"], row["page_count"], row["rss_kb"],
                  load1), flush=True)

    os.nice(5)  # the load and sampling threads; serve keeps its own priority
    t0 = time.monotonic()
    sample(0)
    threads = [threading.Thread(target=submitter, daemon=True) for _ in range(2)]
    threads.append(threading.Thread(target=querier, daemon=True))
    for t in threads:
        t.start()
    end = args.minutes * 60
    k = 1
    while k * args.sample_every <= end + 0.01:
        delay = t0 + k * args.sample_every - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        try:
            os.kill(args.serve_pid, 0)
        except OSError:
            stop.set()
            raise SystemExit("retention: serve died during the run (see serve.log)")
        sample(time.monotonic() - t0)
        k += 1
    stop.set()
    for t in threads:
        t.join(20)
    live.close()

    # Summary.
    def at(seconds):
        return min(samples, key=lambda r: abs(r["t_s"] - seconds))

    def mb(b):
        return "%.2f MB" % (b / 1e6)

    lines = ["load: %.0f submissions/s (1-3 URLs), %.0f status queries/s, %.1f minutes, "
             "retention %.0f s" % (args.submit_rate, args.status_rate, args.minutes, args.retention_s),
             "", "minute  t_s  submissions  db         wal        db+wal     deleted  tasks rows  audit rows  free pages  rss"]
    marks = [0] + [60 * m for m in range(1, int(args.minutes) + 1)]
    if samples[-1]["t_s"] - marks[-1] > 5:
        marks.append(samples[-1]["t_s"])
    for s in marks:
        r = at(s)
        lines.append("%6s %5.0f %12d  %-10s %-10s %-10s %7s  %10s  %10s  %10s  %s kB" % (
            "end" if s == marks[-1] else "%g" % (s / 60), r["t_s"], r["submissions_ok"], mb(r["db_bytes"]),
            mb(r["wal_bytes"]), mb(r["db_plus_wal"]), r["tasks_deleted_total"], r["tasks_rows"],
            r["audit_rows"], r["freelist_count"], r["rss_kb"]))
    first, win, half, last = samples[0], at(args.retention_s), at(end / 2), samples[-1]
    g_win = win["db_plus_wal"] - first["db_plus_wal"]
    g_half = last["db_plus_wal"] - half["db_plus_wal"]
    n_win = win["submissions_ok"] - first["submissions_ok"]
    n_half = last["submissions_ok"] - half["submissions_ok"]
    d_win = win["db_bytes"] - first["db_bytes"]
    d_half = last["db_bytes"] - half["db_bytes"]
    lines += [
        "",
        "first window (0-%.0f s): db+wal +%d bytes (db +%d) for %d submissions (%.0f bytes each)" % (
            win["t_s"], g_win, d_win, n_win, g_win / max(n_win, 1)),
        "last half (%.0f-%.0f s): db+wal %+d bytes (db %+d) for %d submissions (%.0f bytes each); "
        "%.1f %% of the first window's growth" % (
            half["t_s"], last["t_s"], g_half, d_half, n_half, g_half / max(n_half, 1),
            100.0 * g_half / g_win if g_win else float("nan")),
        "tasks deleted by the sweep: %s; tasks finished: %s" % (last["tasks_deleted_total"],
                                                              last["tasks_finished_total"]),
        "rss: %s kB at the first window, %s kB at the end" % (win["rss_kb"], last["rss_kb"]),
        "",
        "submissions: %s" % {k: v for k, v in sorted(counts.items()) if k.startswith("submit")},
        "status answers by the reqId's age:",
    ]
    for bucket in ("<30s", "30-60s", ">60s"):
        got = {k.split("|")[2]: v for k, v in counts.items() if k.startswith("status|%s|" % bucket)}
        lines.append("  %-7s %s" % (bucket, dict(sorted(got.items()))))
    text = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump({"samples": samples, "counts": counts}, f, indent=1, sort_keys=True)
    print(text, end="", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
