#!/usr/bin/env python3
"""HTTP/1.1 edge cases through the gateway and through nginx, side by side.

    benches/http1/differential.py [--gateway target/debug/gateway] [--only NAME]

Starts one scripted raw-socket backend, the gateway and nginx (installed from Debian when
missing) in front of it, sends each case below as raw bytes to both, and prints one row per case:
what the client got (status lines, a few headers, body, whether the connection stayed open,
when the first body byte came) and what the backend received. Rows where the two differ are
marked `*` (statuses or connection reuse differ): that is where to look, not a verdict (nginx
is not always right; docs/security.md and docs/configuration.md say which answer the gateway
gives and why).

Loopback only; every process started here is stopped by its PID. Needs Python 3.9+.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

BACKEND_PORT = 18901
GATEWAY_PORT = 18980
NGINX_PORT = 18981


class Backend:
    """Answers each request by the mode named in its path (`/api/<mode>/...`), and records the
    request line and headers it read, per request, in arrival order."""

    def __init__(self, port):
        self.seen = []
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(64)
        threading.Thread(target=self.accept, daemon=True).start()

    def take_seen(self):
        with self.lock:
            seen, self.seen = self.seen, []
        return seen

    def accept(self):
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        conn.settimeout(3)
        buf = b""
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                with self.lock:
                    self.seen.append(lines)
                headers = [l.split(":", 1) for l in lines[1:] if ":" in l]
                length = next((int(v) for n, v in headers if n.lower() == "content-length"), 0)
                mode = lines[0].split(" ")[1].split("/")[2] if lines[0].count("/") > 2 else ""
                if mode == "continue":
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                if mode == "early401":
                    conn.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno")
                    conn.settimeout(0.5)
                    try:
                        while True:
                            data = conn.recv(65536)
                            if not data:
                                return
                            with self.lock:
                                self.seen.append(["(after the answer) " + repr(data[:40])])
                    except socket.timeout:
                        return
                while len(buf) < length:
                    data = conn.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                if mode == "delayed":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
                    time.sleep(1.0)
                    conn.sendall(b"world")
                elif mode == "dupcl":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok")
                elif mode == "chunked":
                    conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        except OSError:
            return
        finally:
            conn.close()


def exchange(port, steps, wait=1.5):
    """Sends the steps (bytes, or a float: seconds to wait for answers before the next step)
    and returns what came back, when the first byte after a head's blank line came, and
    whether the connection was still open at the end."""
    conn = socket.create_connection(("127.0.0.1", port))
    start = time.time()
    got, first_body = b"", None
    conn.settimeout(0.05)

    def drain(until):
        nonlocal got, first_body
        while time.time() < until:
            try:
                data = conn.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return False
            if not data:
                return False
            got += data
            if first_body is None and b"\r\n\r\n" in got and not got.endswith(b"\r\n\r\n"):
                first_body = time.time() - start
        return True

    open_ = True
    for step in steps:
        if isinstance(step, float):
            open_ = drain(time.time() + step)
        else:
            try:
                conn.sendall(step)
            except OSError:
                open_ = False
    if open_:
        open_ = drain(time.time() + wait)
    conn.close()
    return got, first_body, open_


def summary(got, first_body, open_):
    """What the client got, as (the statuses and whether the connection stayed open: what the
    two are compared by; a line to print)."""
    text = got.decode("latin-1")
    parts, statuses = [], []
    for block in text.split("HTTP/1.")[1:]:
        head, _, body = block.partition("\r\n\r\n")
        status = head.split("\r\n")[0][2:5]
        statuses.append(status)
        headers = [l.lower() for l in head.split("\r\n")[1:]]
        cl = sum(1 for h in headers if h.startswith("content-length:"))
        conn = next((h.split(":", 1)[1].strip() for h in headers if h.startswith("connection:")), "-")
        body = body[:12].replace("\r\n", "\\n")
        parts.append(f"{status}" + (f" cl×{cl}" if cl > 1 else "") + (f" [{conn}]" if conn != "-" else "")
                     + (f" {body!r}" if body else ""))
    timing = f" first-body {first_body:.2f}s" if first_body is not None else ""
    line = " | ".join(parts) + ("  open" if open_ else "  closed") + timing
    return (tuple(statuses), open_), line


def backend_summary(seen):
    rows = []
    for lines in seen:
        interesting = [l for l in lines[1:] if l.split(":")[0].lower() in
                       ("expect", "forwarded", "x_forwarded_for", "x-forwarded-for", "transfer-encoding")]
        rows.append(" ".join([lines[0]] + interesting))
    return "; ".join(rows) or "(nothing)"


CASES = [
    ("plain GET", [b"GET /v1/proxy/svc/ok HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("CL body in two pieces 1 s apart", [b"GET /v1/proxy/svc/delayed HTTP/1.1\r\nHost: t\r\n\r\n", 0.5]),
    ("pipelined, back to back", [b"GET /v1/proxy/svc/ok/1 HTTP/1.1\r\nHost: t\r\n\r\nGET /v1/proxy/svc/ok/2 HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("pipelined, during a slow body", [b"GET /v1/proxy/svc/delayed HTTP/1.1\r\nHost: t\r\n\r\n", 0.2,
                                       b"GET /v1/proxy/svc/ok/2 HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("Expect, backend silent", [b"POST /v1/proxy/svc/ok HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                                0.3, b"hello"]),
    ("Expect, backend sends 100", [b"POST /v1/proxy/svc/continue HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                                   0.3, b"hello"]),
    ("Expect, early 401", [b"POST /v1/proxy/svc/early401 HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\n", 0.3, b"hello"]),
    ("Expect: other", [b"POST /v1/proxy/svc/ok HTTP/1.1\r\nHost: t\r\nExpect: other\r\nContent-Length: 5\r\n\r\nhello"]),
    ("dot segments inside", [b"GET /v1/proxy/svc/a/../ok HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("dot segments above", [b"GET /v1/proxy/svc/../../echo HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("%2e%2e above", [b"GET /v1/proxy/svc/%2e%2e/%2e%2e/echo HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("%2f with dots above", [b"GET /v1/proxy/svc/a/..%2f..%2f../echo HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("%2F inside", [b"GET /v1/proxy/svc/ok/a%2Fb HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("%5c with dots above", [b"GET /v1/proxy/svc/a/..%5c..%5c../echo HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("raw backslash", [b"GET /v1/proxy/svc/ok/a\\b HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("..;/ above", [b"GET /v1/proxy/svc/..;/echo HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("underscore header", [b"GET /v1/proxy/svc/ok HTTP/1.1\r\nHost: t\r\nX_Forwarded_For: 6.6.6.6\r\n\r\n"]),
    ("Forwarded spoof", [b"GET /v1/proxy/svc/ok HTTP/1.1\r\nHost: t\r\nForwarded: for=6.6.6.6\r\n\r\n"]),
    ("duplicate identical response CL", [b"GET /v1/proxy/svc/dupcl HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("TE: gzip, chunked", [b"POST /v1/proxy/svc/ok HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"]),
    ("TE: chunked", [b"POST /v1/proxy/svc/ok HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"]),
    ("absolute-form, other Host", [b"GET http://example.com/v1/proxy/svc/ok HTTP/1.1\r\nHost: other\r\n\r\n"]),
    ("10 KB target", [b"GET /v1/proxy/svc/ok/" + b"a" * 10000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("40 KB target", [b"GET /v1/proxy/svc/ok/" + b"a" * 40000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("OPTIONS *", [b"OPTIONS * HTTP/1.1\r\nHost: t\r\n\r\n"]),
    ("CL + TE", [b"POST /v1/proxy/svc/ok HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]),
    ("bare LF", [b"GET /v1/proxy/svc/ok HTTP/1.1\nHost: t\n\n"]),
    ("chunked response", [b"GET /v1/proxy/svc/chunked HTTP/1.1\r\nHost: t\r\n\r\n"]),
]


def start_nginx(workdir):
    if not shutil.which("nginx"):
        subprocess.run(["apt-get", "install", "-y", "-qq", "nginx"], check=True,
                       stdout=subprocess.DEVNULL)
    conf = os.path.join(workdir, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  upstream backend {{ server 127.0.0.1:{BACKEND_PORT}; keepalive 16; }}
  server {{
    listen 127.0.0.1:{NGINX_PORT};
    location /v1/proxy/svc/ {{
      proxy_pass http://backend/api/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
""")
    return subprocess.Popen(["nginx", "-c", conf, "-p", workdir],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_gateway(binary, workdir):
    with open(os.path.join(workdir, "services.yaml"), "w") as f:
        f.write(f'svc:\n  backends: ["http://127.0.0.1:{BACKEND_PORT}/api"]\n')
    conf = os.path.join(workdir, "gateway.yaml")
    with open(conf, "w") as f:
        f.write(f"""---
version: 1
threads: 1
pid_file: {workdir}/gateway.pid
upgrade_sock: {workdir}/upgrade.sock
grace_period_seconds: 1
graceful_shutdown_timeout_seconds: 1
gateway:
  listen: 127.0.0.1:{GATEWAY_PORT}
  admin_listen: "off"
  services: services.yaml
  status_log: false
""")
    return subprocess.Popen([binary, "-c", conf], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def wait_listening(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port)).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gateway", default="target/debug/gateway")
    parser.add_argument("--only", help="run only the cases whose name contains this")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="http1-diff-")
    backend = Backend(BACKEND_PORT)
    processes = [start_gateway(args.gateway, workdir), start_nginx(workdir)]
    try:
        wait_listening(GATEWAY_PORT)
        wait_listening(NGINX_PORT)
        differ = 0
        for name, steps in CASES:
            if args.only and args.only not in name:
                continue
            rows = []
            for port in (GATEWAY_PORT, NGINX_PORT):
                backend.take_seen()
                key, client = summary(*exchange(port, steps))
                time.sleep(0.2)
                rows.append((key, client, backend_summary(backend.take_seen())))
            mark = "*" if rows[0][0] != rows[1][0] else " "
            differ += mark == "*"
            print(f"{mark} {name}")
            for who, (_, client, seen) in zip(("gateway", "nginx"), rows):
                print(f"    {who:8} client: {client}")
                print(f"    {'':8} backend: {seen[:160]}")
        print(f"{differ} of {len(CASES)} cases: statuses or connection reuse differ")
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
