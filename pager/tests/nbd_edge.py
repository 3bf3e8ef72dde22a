# Edge cases of the NBD server, run by pager/tests/nbd.rs under /usr/bin/nbdsh:
#   nbdsh -n -c "exec(open(SCRIPT).read())"
# with NBD_URI (the export) and NBD_EXPECT (a file holding the export's expected bytes).
import errno
import os
import random
import threading

import nbd

uri = os.environ["NBD_URI"]
expect = open(os.environ["NBD_EXPECT"], "rb").read()
size = len(expect)
PAGE = 4096


def connect():
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    # Let requests the client library would refuse reach the server.
    h.set_strict_mode(0)
    h.connect_uri(uri)
    return h


h = connect()
assert h.get_size() == size, (h.get_size(), size)
assert h.is_read_only()
assert h.can_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
assert h.can_multi_conn()
assert h.can_df()

# Read past the end, and straddling the end: EINVAL from the server.
for off, n in [(size, 1), (size - 100, 4096), (size + 4096, 4096), (2**63, 512)]:
    try:
        h.pread(n, off)
        raise AssertionError("read at %d+%d succeeded" % (off, n))
    except nbd.Error as e:
        assert e.errnum == errno.EINVAL, (off, n, e)

# Zero-length read.
assert h.pread(0, 0) == b""
assert h.pread(0, size) == expect[size:]  # empty slice: still zero length at the end

# Unaligned offsets and lengths, across zero and data pages; also with DF (one chunk).
rnd = random.Random(5)
for _ in range(200):
    off = rnd.randrange(0, size - 1)
    n = rnd.randrange(1, min(3 * PAGE + 77, size - off) + 1)
    assert h.pread(n, off) == expect[off:off + n], (off, n)
    assert h.pread(n, off, nbd.CMD_FLAG_DF) == expect[off:off + n], (off, n)
assert h.pread(size, 0) == expect

# Writes to a read-only export fail with EPERM; the connection carries on.
try:
    h.pwrite(b"x" * 10, 0)
    raise AssertionError("write to read-only export succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EPERM, e
assert h.pread(10, 0) == expect[:10]


def zero_page(i):
    return expect[i * PAGE:(i + 1) * PAGE].count(0) == len(expect[i * PAGE:(i + 1) * PAGE])


def expected_extents(off, n):
    out = []
    end = off + n
    pos = off
    while pos < end:
        i = pos // PAGE
        stop = min(end, (i + 1) * PAGE)
        flags = 3 if zero_page(i) else 0
        if out and out[-1][1] == flags:
            out[-1][0] += stop - pos
        else:
            out.append([stop - pos, flags])
        pos = stop
    return out


def block_status(h, off, n, flags=0):
    got = []

    def cb(metacontext, offset, entries, err):
        assert metacontext == nbd.CONTEXT_BASE_ALLOCATION
        assert offset == off
        for k in range(0, len(entries), 2):
            got.append([entries[k], entries[k + 1]])

    h.block_status(n, off, cb, flags)
    return got


# Block status across zero and data runs, at aligned and unaligned offsets.
for off, n in [(0, size), (1, size - 1), (PAGE * 3 + 5, PAGE * 9), (size - 1, 1)]:
    assert block_status(h, off, n) == expected_extents(off, n), (off, n)
one = block_status(h, 0, size, nbd.CMD_FLAG_REQ_ONE)
assert one == expected_extents(0, size)[:1], one
try:
    block_status(h, size, 1)
    raise AssertionError("block status past the end succeeded")
except nbd.Error as e:
    assert e.errnum == errno.EINVAL, e

# Many requests in flight on one connection (replies may come back in any order).
cookies = {}
for k in range(64):
    off = rnd.randrange(0, size - 1)
    n = rnd.randrange(1, min(65536, size - off) + 1)
    buf = nbd.Buffer(n)
    cookies[h.aio_pread(buf, off)] = (buf, off, n)
while h.aio_in_flight() > 0:
    h.poll(-1)
for c, (buf, off, n) in cookies.items():
    assert h.aio_command_completed(c)
    assert buf.to_bytearray() == expect[off:off + n], (off, n)
h.shutdown()

# Eight concurrent connections.
errors = []


def worker(seed):
    try:
        c = connect()
        r = random.Random(seed)
        for _ in range(100):
            off = r.randrange(0, size - 1)
            n = r.randrange(1, min(256 * 1024, size - off) + 1)
            assert c.pread(n, off) == expect[off:off + n]
        c.shutdown()
    except BaseException as e:  # noqa: BLE001 - reported below
        errors.append(repr(e))


threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
print("nbdsh edge cases: ok")
