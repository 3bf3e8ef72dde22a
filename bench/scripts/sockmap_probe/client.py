#!/usr/bin/env python3
"""Times PORT (probe.c's forwarding, or the server directly): 612 B round trips on one kept-alive
connection, 612 B round trips each on a new connection, and 256 MiB from the server.

    client.py PORT [ROUND_TRIPS] [NEW_CONNECTIONS]
"""
import socket
import sys
import time

MSG = b"y" * 612


def connect(port):
    c = socket.create_connection(("127.0.0.1", port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return c


def round_trip(c):
    c.sendall(MSG)
    got = 0
    while got < len(MSG):
        got += len(c.recv(65536))


def pcts(us):
    us.sort()
    return f"p50 {us[len(us) // 2]:.1f} us p95 {us[int(len(us) * 0.95)]:.1f} us"


def main():
    port = int(sys.argv[1])
    trips = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    conns = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    c, lat = connect(port), []
    for i in range(trips + 200):
        t = time.perf_counter_ns()
        round_trip(c)
        if i >= 200:
            lat.append((time.perf_counter_ns() - t) / 1000)
    c.close()
    print(f"kept-alive round trip {pcts(lat)}")
    lat = []
    for i in range(conns + 50):
        t = time.perf_counter_ns()
        c = connect(port)
        round_trip(c)
        if i >= 50:
            lat.append((time.perf_counter_ns() - t) / 1000)
        c.close()
    print(f"new connection round trip {pcts(lat)}")
    c = connect(port)
    t = time.perf_counter()
    c.sendall(b"BIG")
    got = 0
    while got < (256 << 20):
        d = c.recv(1 << 20)
        if not d:
            break
        got += len(d)
    dt = time.perf_counter() - t
    print(f"256 MiB in {dt:.3f} s: {got / dt / 1e6:.0f} MB/s")
    c.close()


if __name__ == "__main__":
    main()
