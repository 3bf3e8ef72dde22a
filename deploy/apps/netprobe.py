#!/usr/bin/env python3
"""A tenant that reports what its network lets it reach (for the isolation tests).

GET /connect?host=H&port=P tries a TCP connection and answers "connected" or the error's name;
GET /ifaces answers the network interfaces it sees, one per line; GET / answers "ok".
"""
import http.server
import socket
import sys
from urllib.parse import parse_qs, urlparse


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = parse_qs(url.query)
        if url.path == "/connect":
            host = query.get("host", ["127.0.0.1"])[0]
            port = int(query.get("port", ["80"])[0])
            try:
                with socket.create_connection((host, port), timeout=2):
                    body = "connected"
            except OSError as e:
                body = type(e).__name__
        elif url.path == "/ifaces":
            with open("/proc/net/dev") as f:
                body = "\n".join(line.split(":")[0].strip() for line in f.readlines()[2:])
        else:
            body = "ok"
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
