#!/usr/bin/env python3
"""HTTPS GET load for bench/https.sh, python3's standard library only.

Two things wrk cannot do:
  keepalive  GETs on kept-alive TLS connections, reading bodies with 1 MiB reads (wrk reads
             8 KiB at a time, which limits it on 10 MiB bodies more than the servers do);
  resumed    a new TLS connection per request that resumes the previous connection's session
             (wrk makes a full handshake on every connection), counting how many were resumed.

Each of --procs processes runs one connection (one at a time in `resumed`) for --seconds and
checks every answer: status 200, the expected length and `X-Cache: HIT`. Prints one JSON line:
requests, bytes, seconds, req_s, mb_s, p50_ms, p99_ms, resumed (connections that resumed),
connections, errors.

  https_client.py --addr 127.0.0.1:19303 --host bench.example.com --path /10m.bin \
      --length 10485760 --mode keepalive --procs 4 --seconds 10 [--cafile ca.pem]
"""

import argparse
import json
import multiprocessing
import socket
import ssl
import time

READ = 1 << 20


def context(cafile):
    ctx = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def connect(ctx, addr, host, session):
    raw = socket.create_connection(addr)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw, server_hostname=host, session=session)


def get(sock, host, path, length, buf, close):
    """One GET on `sock`; returns (ok, body bytes read)."""
    conn = "close" if close else "keep-alive"
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {conn}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(16384)
        if not chunk:
            return False, 0
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    ok = lines[0].split(" ")[1] == "200" and fields.get("x-cache", "").upper().startswith("HIT")
    want = int(fields.get("content-length", "-1"))
    ok = ok and want == length
    got = len(rest)
    view = memoryview(buf)
    while got < want:
        n = sock.recv_into(view, min(READ, want - got))
        if n == 0:
            return False, got
        got += n
    return ok, got


def worker(args, deadline, out):
    ctx = context(args.cafile)
    addr = (args.addr.rsplit(":", 1)[0], int(args.addr.rsplit(":", 1)[1]))
    buf = bytearray(READ)
    lat, nbytes, errors, resumed, conns = [], 0, 0, 0, 0
    session = None
    sock = None
    while time.monotonic() < deadline:
        start = time.monotonic()
        try:
            if sock is None:
                sock = connect(ctx, addr, args.host, session)
                conns += 1
                resumed += sock.session_reused
            close = args.mode == "resumed"
            ok, got = get(sock, args.host, args.path, args.length, buf, close)
            if close:
                # The TLS 1.3 ticket arrives after the handshake; it has been read with the answer.
                session = sock.session
                sock.close()
                sock = None
        except OSError:
            ok, got = False, 0
            if sock is not None:
                sock.close()
            sock = None
        nbytes += got
        if ok:
            lat.append(time.monotonic() - start)
        else:
            errors += 1
    if sock is not None:
        sock.close()
    out.put((lat, nbytes, errors, resumed, conns))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--addr", required=True)
    p.add_argument("--host", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--length", type=int, required=True)
    p.add_argument("--mode", choices=["keepalive", "resumed"], default="keepalive")
    p.add_argument("--procs", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--cafile")
    args = p.parse_args()
    out = multiprocessing.Queue()
    start = time.monotonic()
    deadline = start + args.seconds
    procs = [multiprocessing.Process(target=worker, args=(args, deadline, out))
             for _ in range(args.procs)]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    for proc in procs:
        proc.join()
    elapsed = time.monotonic() - start
    lat = sorted(x for r in results for x in r[0])
    nbytes = sum(r[1] for r in results)

    def pct(q):
        return round(lat[min(len(lat) - 1, int(q * len(lat)))] * 1000, 2) if lat else None

    print(json.dumps({
        "requests": len(lat), "bytes": nbytes, "seconds": round(elapsed, 2),
        "req_s": round(len(lat) / elapsed, 1), "mb_s": round(nbytes / elapsed / 1e6, 1),
        "p50_ms": pct(0.50), "p99_ms": pct(0.99),
        "resumed": sum(r[3] for r in results), "connections": sum(r[4] for r in results),
        "errors": sum(r[2] for r in results),
    }))


if __name__ == "__main__":
    main()
