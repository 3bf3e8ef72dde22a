#!/usr/bin/env python3
"""A small content site for the dedup benchmark: each tenant serves its own articles.

argv: PORT SEED. At start it writes ARTICLES articles of generated text (seeded by SEED, so every
tenant's content differs while the program is the same); GET /article/N serves one, GET /add?n=K
writes K more (the traffic between checkpoints changes the heap), GET /inc counts.
"""
import http.server
import random
import sys

WORDS = (
    "page store tenant memory checkpoint restore cloud object cold local tier pack manifest "
    "request server python redis nginx kernel process thread socket buffer cache index hash "
    "report price storage month byte idle wake sleep mail chat web dns zone record user blog"
).split()
RNG = random.Random()
ARTICLES = []
COUNT = 0


def article():
    n = RNG.randint(150, 450)
    title = " ".join(RNG.choice(WORDS) for _ in range(6)).title()
    body = " ".join(RNG.choice(WORDS) for _ in range(n))
    return {"title": title, "body": body, "views": 0, "tags": [RNG.choice(WORDS) for _ in range(4)]}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        global COUNT
        if self.path.startswith("/article/"):
            a = ARTICLES[int(self.path.rsplit("/", 1)[-1]) % len(ARTICLES)]
            a["views"] += 1
            body = "<h1>%s</h1><p>%s</p>" % (a["title"], a["body"])
        elif self.path.startswith("/add"):
            n = int(self.path.split("n=")[-1]) if "n=" in self.path else 1
            for _ in range(n):
                ARTICLES.append(article())
            body = str(len(ARTICLES))
        elif self.path.startswith("/inc"):
            COUNT += 1
            body = str(COUNT)
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
    port = int(sys.argv[1])
    RNG.seed(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    for _ in range(300):
        ARTICLES.append(article())
    http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
