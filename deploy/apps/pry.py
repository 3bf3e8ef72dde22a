#!/usr/bin/env python3
"""A tenant that tries to get out of its sandbox (for the isolation tests).

GET /pry?home=H&other=NAME&pid=P&shm=KEY tries every way out it knows and answers one line per attempt,
"NAME allowed" or "NAME refused: ERROR": reading the worker's home H (its store, its config,
the tenant NAME's directory and records), another process P of the machine through /proc,
the System V shared memory segment KEY of the host,
making a disk's device node and mounting it, tracing a process, joining a namespace, making one,
loading a kernel module and writing to the system's directories.
With only=reads, only the attempts to read (harmless outside a sandbox).
GET /own answers "ok" once it has written into its working directory and its /tmp (what it may).
GET /shadow answers "/etc/shadow allowed" or "/etc/shadow refused: ERROR": root of the host
reads it, root of a user namespace of its own does not.
"""
import ctypes
import ctypes.util
import http.server
import os
import stat
import sys
import time
from urllib.parse import parse_qs, urlparse

libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
SYS_FINIT_MODULE = 313
PTRACE_ATTACH = 16
CLONE_NEWUSER = 0x10000000
CLONE_NEWNS = 0x00020000


def call(ret):
    """A libc call's result as Python would raise it."""
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def read_tree(path):
    """Reads the first byte of a file under path (or of path itself): a listing alone does not
    pass, and nothing readable there raises the last error met."""
    if not os.path.isdir(path):
        with open(path, "rb") as f:
            f.read(1)
        return
    last = FileNotFoundError(f"nothing readable under {path}")
    for top, _dirs, files in os.walk(path, onerror=lambda e: None):
        for name in files:
            try:
                with open(os.path.join(top, name), "rb") as f:
                    f.read(1)
                return
            except OSError as e:
                last = e
    raise last


def see_process(pid):
    if pid not in os.listdir("/proc"):
        raise FileNotFoundError(f"no /proc/{pid} here")


READS = 8  # the first attempts only read; harmless outside a sandbox (the tests' control)


def attempts(home, other, pid, shm_key):
    def trace_a_child():
        child = os.fork()
        if child == 0:
            time.sleep(5)
            os._exit(0)
        try:
            call(libc.ptrace(PTRACE_ATTACH, child, None, None))
        finally:
            os.kill(child, 9)
            os.waitpid(child, 0)

    def mount_disk():
        os.makedirs("/tmp/m", exist_ok=True)
        call(libc.mount(b"/dev/vda", b"/tmp/m", b"ext4", 0, None))

    def join_a_namespace():
        fd = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            call(libc.setns(fd, 0))
        finally:
            os.close(fd)

    def load_a_module():
        fd = os.open("/etc/hostname", os.O_RDONLY)
        try:
            call(libc.syscall(SYS_FINIT_MODULE, fd, b"", 0))
        finally:
            os.close(fd)

    def attach_shared_memory():
        libc.shmget.restype = ctypes.c_int
        call(libc.shmget(ctypes.c_int(shm_key), ctypes.c_size_t(0), ctypes.c_int(0)))

    return [
        ("the store", lambda: read_tree(os.path.join(home, "cold"))),
        ("the local tier", lambda: read_tree(os.path.join(home, "local"))),
        ("the worker's config", lambda: read_tree(os.path.join(home, "config.toml"))),
        ("another tenant's directory", lambda: read_tree(os.path.join(home, "tenants", other))),
        ("another tenant's images", lambda: read_tree(os.path.join(home, "staging"))),
        ("another process's /proc", lambda: read_tree(f"/proc/{pid}/cmdline")),
        ("the machine's processes", lambda: see_process(pid)),
        ("System V shared memory of the host", attach_shared_memory),
        ("mknod of the disk", lambda: os.mknod("/tmp/vda", stat.S_IFBLK | 0o600, os.makedev(254, 0))),
        ("mount", mount_disk),
        ("ptrace", trace_a_child),
        ("setns", join_a_namespace),
        ("unshare of a user namespace", lambda: call(libc.unshare(CLONE_NEWUSER))),
        ("unshare of a mount namespace", lambda: call(libc.unshare(CLONE_NEWNS))),
        ("loading a module", load_a_module),
        # Opened for writing only, never written: either would take the host with it.
        ("writing the kernel's core pattern", lambda: open("/proc/sys/kernel/core_pattern", "a").close()),
        ("the sysrq trigger", lambda: open("/proc/sysrq-trigger", "a").close()),
        ("writing to /usr", lambda: open("/usr/pwned", "w").close()),
        ("writing to /etc", lambda: open("/etc/pwned", "w").close()),
    ]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if url.path == "/pry":
            lines = []
            tried = attempts(query["home"], query["other"], query["pid"], int(query["shm"]))
            if query.get("only") == "reads":
                tried = tried[:READS]
            for name, attempt in tried:
                try:
                    attempt()
                    lines.append(f"{name} allowed")
                except Exception as e:  # every way of failing counts as refused
                    lines.append(f"{name} refused: {type(e).__name__}: {e}")
            body = "\n".join(lines)
        elif url.path == "/shadow":
            try:
                read_tree("/etc/shadow")
                body = "/etc/shadow allowed"
            except OSError as e:
                body = f"/etc/shadow refused: {type(e).__name__}: {e}"
        elif url.path == "/own":
            with open("own-file", "w") as f:
                f.write("mine")
            with open("/tmp/own-file", "w") as f:
                f.write("mine")
            body = "ok"
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
