#!/usr/bin/env python3
"""A small HTTP server for tests/fleet.rs: serves the files of a folder, with ETag (the
SHA-256 of the content) and Last-Modified, answering 304 to If-None-Match / If-Modified-Since
when the file did not change. Every request is logged to a file as "METHOD PATH STATUS".

Modes, switched by marker files in the folder (so the test changes them without restarting):
  .truncate  a 200 answer announces the whole Content-Length but sends half, then closes
  .hang      the request gets no answer (the connection stays open, up to 60 s)

Usage: fleet_server.py DIR ADDRESS PORT LOGFILE [CERT KEY]: with CERT and KEY (PEM), HTTPS.
Ends by itself after 15 minutes.
"""

import hashlib
import os
import sys
import threading
import time
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import socket
import ssl

ROOT, ADDR, PORT, LOG = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
LOCK = threading.Lock()


def log(line):
    with LOCK, open(LOG, "a") as f:
        f.write(line + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        name = os.path.basename(self.path.split("?")[0])
        path = os.path.join(ROOT, name)
        if os.path.exists(os.path.join(ROOT, ".hang")):
            log(f"GET {self.path} hang")
            time.sleep(60)
            return
        if not name or name.startswith(".") or not os.path.isfile(path):
            log(f"GET {self.path} 404")
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        with open(path, "rb") as f:
            body = f.read()
        etag = '"' + hashlib.sha256(body).hexdigest() + '"'
        mtime = os.stat(path).st_mtime
        last_modified = formatdate(mtime, usegmt=True)
        inm = self.headers.get("If-None-Match")
        ims = self.headers.get("If-Modified-Since")
        not_modified = False
        if inm is not None:
            not_modified = etag in [t.strip() for t in inm.split(",")]
        elif ims is not None:
            try:
                not_modified = int(mtime) <= parsedate_to_datetime(ims).timestamp()
            except (TypeError, ValueError):
                pass
        if not_modified:
            log(f"GET {self.path} 304")
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return
        truncate = os.path.exists(os.path.join(ROOT, ".truncate"))
        log(f"GET {self.path} {'200-truncated' if truncate else '200'}")
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        self.end_headers()
        if truncate:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    address_family = socket.AF_INET6 if ":" in ADDR else socket.AF_INET


server = Server((ADDR, PORT), Handler)
if len(sys.argv) > 6:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(sys.argv[5], sys.argv[6])
    server.socket = context.wrap_socket(server.socket, server_side=True)
threading.Timer(900, server.shutdown).start()
log("ready")
server.serve_forever()
