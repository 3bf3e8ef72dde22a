#!/usr/bin/env python3
"""A tenant that reads the PROXY protocol v2 header each connection starts with and answers,
over HTTP, the client address it names ("IP:PORT"), or "no header"; to a request for /peer,
the address of its connection's peer (the address it sees its clients at). For the forwarding
tests.
"""
import ipaddress
import socketserver
import struct
import sys

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def read_exact(f, n):
    data = f.read(n)
    if len(data) != n:
        raise EOFError("connection ended inside the header")
    return data


def client_of(f):
    """The client address of the header at the start of f, or None without one."""
    head = f.peek(16)[:16] if hasattr(f, "peek") else b""
    if not head.startswith(SIGNATURE):
        return None
    head = read_exact(f, 16)
    version_command, family, length = head[12], head[13], struct.unpack("!H", head[14:16])[0]
    body = read_exact(f, length)
    if version_command != 0x21:
        return f"unexpected version/command {version_command:#x}"
    if family == 0x11:
        src, port = ipaddress.IPv4Address(body[0:4]), struct.unpack("!H", body[8:10])[0]
    elif family == 0x21:
        src, port = ipaddress.IPv6Address(body[0:16]), struct.unpack("!H", body[32:34])[0]
    else:
        return f"unexpected family {family:#x}"
    return f"{src}:{port}"


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        client = client_of(self.rfile)
        request = self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # the request's other lines
        if request.split(b" ")[1:2] == [b"/peer"]:
            client = self.client_address[0]
        body = (client or "no header").encode()
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 8000
    socketserver.TCPServer.allow_reuse_address = True
    socketserver.TCPServer(("127.0.0.1", port), Handler).serve_forever()
