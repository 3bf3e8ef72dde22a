#!/usr/bin/env python3
"""A tenant that keeps state only in memory: GET /inc adds one to a counter and returns it.

Used by the end-to-end tests and benchmarks: after a swap-out and swap-in, the next /inc must
continue the count, which proves the process memory came back. GET /ballast?mb=N allocates N MiB
of random data (a large heap that no dedup or compression shrinks; requests touch none of it),
GET /env?name=X answers its environment variable X, GET /cwd its working directory, GET / "ok".
"""
import http.server
import os
import sys

COUNT = 0
BALLAST = []


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global COUNT
        if self.path.startswith("/inc"):
            COUNT += 1
            body = str(COUNT)
        elif self.path.startswith("/env?name="):
            body = os.environ.get(self.path.split("=", 1)[1], "")
        elif self.path.startswith("/cwd"):
            body = os.getcwd()
        elif self.path.startswith("/ballast"):
            mb = int(self.path.split("mb=")[-1]) if "mb=" in self.path else 1
            for _ in range(mb):
                BALLAST.append(os.urandom(1 << 20))
            body = str(len(BALLAST))
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
