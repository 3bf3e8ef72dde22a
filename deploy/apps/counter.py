#!/usr/bin/env python3
"""A tenant that keeps state only in memory: GET /inc adds one to a counter and returns it.

Used by the end-to-end tests and benchmarks: after a swap-out and swap-in, the next /inc must
continue the count, which proves the process memory came back. GET /ballast?mb=N allocates N MiB
of random data (a large heap that no dedup or compression shrinks; requests touch none of it but
GET /touch, which reads a byte of each of its pages and answers their sum; /touch?mb=N only
its last N MiB),
GET /env?name=X answers its environment variable X, GET /cwd its working directory, GET / "ok".
GET /write?name=F&kb=N appends N KiB of random bytes to file F of its working directory and
answers "wrote", or the errno's name (ENOSPC) when the write fails; GET /size?name=F answers F's
size in bytes. GET /hold?path=P opens file P and keeps it open (answers "held"), GET /release
closes every file held (answers how many).
"""
import errno
import http.server
import os
import sys
import urllib.parse

COUNT = 0
BALLAST = []
HELD = []


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
        elif self.path.startswith("/write?"):
            query = urllib.parse.parse_qs(self.path.split("?", 1)[1])
            try:
                with open(query["name"][0], "ab") as f:
                    for _ in range(int(query["kb"][0])):
                        f.write(os.urandom(1024))
                    f.flush()
                    os.fsync(f.fileno())
                body = "wrote"
            except OSError as e:
                body = errno.errorcode.get(e.errno, str(e.errno))
        elif self.path.startswith("/hold?path="):
            HELD.append(open(urllib.parse.unquote(self.path.split("=", 1)[1]), "rb"))
            body = "held"
        elif self.path.startswith("/release"):
            body = str(len(HELD))
            for f in HELD:
                f.close()
            HELD.clear()
        elif self.path.startswith("/size?name="):
            body = str(os.path.getsize(self.path.split("=", 1)[1]))
        elif self.path.startswith("/touch"):
            last = int(self.path.split("mb=")[-1]) if "mb=" in self.path else len(BALLAST)
            body = str(sum(sum(b[::4096]) for b in BALLAST[len(BALLAST) - last:]))
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
