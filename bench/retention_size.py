#!/usr/bin/env python3
"""Task retention under a steady load (API.md §12): does the SQLite database stop growing once
the retention window is full?

Starts `precache serve --task-retention 30s` on 127.0.0.1:19310 (edge 19312) and a python
http.server origin on 19311, submits 3-URL prefetches back to back (~17/s on a 2-core machine)
for N minutes (argument, default 2.5), and every 15 s prints: seconds, submissions, tasks the
account's list shows (at most 1000), precache.db bytes, precache.db-wal bytes, their sum.
Everything is stopped at the end. PRECACHE_BIN (default target/release/precache), WORK (scratch
dir, default /tmp/precache-retention-bench, emptied first).

    python3 bench/retention_size.py 4
"""
import json, os, subprocess, sys, time, urllib.request, shutil, signal
work = os.environ.get("WORK", "/tmp/precache-retention-bench")
shutil.rmtree(work, ignore_errors=True); os.makedirs(work + "/origin")
for i in range(5):
    open(f"{work}/origin/f{i}.bin", "wb").write(os.urandom(1024))
origin = subprocess.Popen([sys.executable, "-m", "http.server", "19311", "--bind", "127.0.0.1"], cwd=work + "/origin", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
env = dict(os.environ, PRECACHE_ADMIN_PASSWORD="bench-admin-pw", RUST_LOG="warn")
serve = subprocess.Popen([os.environ.get("PRECACHE_BIN", "target/release/precache"), "serve", "--data-dir", work + "/data", "--api-listen", "127.0.0.1:19310", "--edge-listen", "127.0.0.1:19312", "--task-retention", "30s", "--max-urls-per-request", "3"], env=env, stdout=subprocess.DEVNULL, stderr=open(work + "/serve.log", "w"))
API = "http://127.0.0.1:19310"
def call(method, path, body=None, token=None):
    req = urllib.request.Request(API + path, method=method, data=json.dumps(body).encode() if body is not None else None, headers={"Content-Type": "application/json", **({"X-Auth-Token": token} if token else {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r: return json.loads(r.read())["zt_api"]
    except urllib.error.HTTPError as e: return json.loads(e.read())["zt_api"]
try:
    for _ in range(100):
        try: call("GET", "/cdn_api/health"); break
        except Exception: time.sleep(0.1)
    admin = call("POST", "/cdn_api/auth/tokens", {"username": "admin", "password": "bench-admin-pw"})["token"]["id"]
    call("POST", "/cdn_api/users", {"name": "alice", "password": "alice-password-1"}, admin)
    call("PUT", "/cdn_api/quota/alice", {"prefetch_urls_per_day": 10000000}, admin)
    call("POST", "/cdn_api/domains", {"domain": "game.example.com", "origin": "http://127.0.0.1:19311", "owner": "alice"}, admin)
    tok = call("POST", "/cdn_api/auth/tokens", {"username": "alice", "password": "alice-password-1"})["token"]["id"]
    start = time.time(); last = 0; n = 0; rows = []
    minutes = float(sys.argv[1]) if len(sys.argv) > 1 else 2.5
    while time.time() - start < minutes * 60:
        urls = [f"http://game.example.com/f{(n+k) % 7}.bin?v={n}" for k in range(3)]
        r = call("POST", "/cdn_api/prefetch", {"urls": urls}, tok); n += 1
        if r.get("ret") != 0: print("refused", r); 
        time.sleep(0.05)
        if time.time() - last >= 15:
            last = time.time()
            db = os.path.getsize(work + "/data/precache.db")
            wal = os.path.getsize(work + "/data/precache.db-wal") if os.path.exists(work + "/data/precache.db-wal") else 0
            tasks = len(call("GET", "/cdn_api/tasks?limit=1000", None, tok).get("tasks", []))
            row = (round(time.time() - start), n, tasks, db, wal, db + wal)
            rows.append(row); print(*row, flush=True)
finally:
    serve.send_signal(signal.SIGTERM); serve.wait(20); origin.kill()
