#!/usr/bin/env python3
"""Why page dedup beats restic on CRIU checkpoints, and what zstd would add: run on a corpus kept
with `pico bench dedup --work DIR` (the corpus is DIR/corpus).

1. From one generation to the next, how many pages are new, and how many pages lie in runs of at
   least 512 KiB of already-known pages (restic's minimum chunk: only such runs can dedup there).
2. The distinct non-zero pages of each layout compressed with zstd -3 in 1 MiB groups (what a zstd
   cold pack could store) and as one stream; and, when the `zstandard` Python package is importable
   (e.g. in a venv: pip install zstandard), zstd -3 per page, alone and with a trained dictionary
   (what keeps every page fetchable by one ranged read).

usage: dedup_analysis.py DIR/corpus [TENANTS]
"""
import glob
import hashlib
import subprocess
import sys

try:
    import zstandard
except ImportError:
    zstandard = None

ROOT = sys.argv[1]
TENANTS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
ZERO = bytes(4096)


def pages(d):
    for f in sorted(glob.glob(d + "/pages-*.img")):
        b = open(f, "rb").read()
        for i in range(0, len(b), 4096):
            yield b[i:i + 4096]


def ids(d):
    return [hashlib.blake2b(p).digest() for p in pages(d)]


zid = hashlib.blake2b(ZERO).digest()
gens = sorted(int(g.rsplit("-", 1)[1]) for g in glob.glob(f"{ROOT}/default-python-00/gen-*"))
if len(gens) >= 2:
    a_gen, b_gen = gens[-2], gens[-1]
    for layout in ["default", "deterministic"]:
        for kind in ["python", "redis", "nginx"]:
            new = tot = in_runs = 0
            for t in range(TENANTS):
                d = f"{ROOT}/{layout}-{kind}-{t:02d}"
                known_ids = set(ids(f"{d}/gen-{a_gen}"))
                known = [x in known_ids or x == zid for x in ids(f"{d}/gen-{b_gen}")]
                new += known.count(False)
                tot += len(known)
                run = 0
                for k in known + [False]:
                    if k:
                        run += 1
                    else:
                        in_runs += run if run >= 128 else 0
                        run = 0
            print(f"{layout:13} {kind:6} gen {b_gen} vs {a_gen}: new pages {new / tot:.1%}; "
                  f"pages in runs of >= 512 KiB of known pages {in_runs / tot:.1%}")

for layout in ["default", "deterministic"]:
    seen = set()
    buf = bytearray()
    for d in sorted(glob.glob(f"{ROOT}/{layout}-*/gen-*")):
        for p in pages(d):
            if p == ZERO:
                continue
            h = hashlib.blake2b(p).digest()
            if h not in seen:
                seen.add(h)
                buf += p
    grouped = 0
    for i in range(0, len(buf), 1 << 20):
        grouped += len(subprocess.run(["zstd", "-3", "-c", "-q"], input=bytes(buf[i:i + (1 << 20)]),
                                      capture_output=True, check=True).stdout)
    whole = len(subprocess.run(["zstd", "-3", "-c", "-q"], input=bytes(buf),
                               capture_output=True, check=True).stdout)
    per_page = ""
    if zstandard is not None:
        pages_list = [bytes(buf[i:i + 4096]) for i in range(0, len(buf), 4096)]
        c3 = zstandard.ZstdCompressor(level=3)
        per = sum(min(len(c3.compress(p)), 4096) for p in pages_list)
        sample = pages_list[::max(1, len(pages_list) // 2000)]
        cd = zstandard.ZstdCompressor(level=3,
                                      dict_data=zstandard.train_dictionary(112 * 1024, sample))
        dic = sum(min(len(cd.compress(p)), 4096) for p in pages_list)
        per_page = (f"; zstd -3 per page {per / 2**20:.2f} MiB ({per / max(len(buf), 1):.1%}), "
                    f"with a 112 KiB dictionary {dic / 2**20:.2f} MiB")
    print(f"{layout}: {len(seen)} distinct non-zero pages = {len(buf) / 2**20:.1f} MiB; zstd -3 in "
          f"1 MiB groups {grouped / 2**20:.2f} MiB ({grouped / max(len(buf), 1):.1%}); "
          f"one stream {whole / 2**20:.2f} MiB{per_page}")
