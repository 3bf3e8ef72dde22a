#!/usr/bin/env python3
"""The probe's tenant: echoes what it reads; `BIG` asks for 256 MiB.  server.py PORT"""
import socket, sys, threading
BIG = 256 << 20
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(65536)
        if not d: break
        if d.startswith(b'BIG'):
            buf = b'x' * (1 << 20)
            for _ in range(BIG >> 20): c.sendall(buf)
        else:
            c.sendall(d)
    c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(128)
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
