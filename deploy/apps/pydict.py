#!/usr/bin/env python3
"""A tenant whose every request touches much of its memory: a dict of ENTRIES ints (1,000,000 by
default) built at start, whose values each request walks.

Used by `pico bench restore` (app py-dict): after a lazy restore, the first request faults in most
of the heap, the opposite of the counter, whose requests touch a few pages. GET / answers
"COUNT SUM": the number of entries and the sum of their values (value of key i: 1000 + i % 1000, each its own int
object), so a client can check that the whole dict came back. Stdlib only:
`python3 pydict.py PORT [ENTRIES]`.
"""
import http.server
import sys

ENTRIES = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
DATA = {i: 1000 + i % 1000 for i in range(ENTRIES)}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/" or self.path.startswith("/walk"):
            # sum() walks every value in C: the request costs the memory it touches, not
            # the interpreter's loop (a Python loop took ~110 ms here, sum() ~10 ms).
            body = f"{len(DATA)} {sum(DATA.values())}"
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
