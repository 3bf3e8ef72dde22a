#!/usr/bin/env python3
"""First touch of fresh anonymous memory, in microseconds per 4 KiB page.

On bare metal a page fault plus the kernel zeroing the page costs ~1-2 us. On a VM whose
balloon reports free memory to its hypervisor, a page the guest gave back costs the
hypervisor's fault as well when it is touched again. A restore allocates every page of the
tenant it brings back, so this is what a wake-up pays per page on such a host.

    first_touch.py MIB [ROUNDS]    (each round maps MIB MiB, writes a byte per page, unmaps)
"""
import mmap
import sys
import time

PAGE = 4096


def touch(mib: int) -> float:
    size = mib << 20
    started = time.perf_counter()
    area = mmap.mmap(-1, size)
    for offset in range(0, size, PAGE):
        area[offset] = 1
    elapsed = time.perf_counter() - started
    area.close()
    return elapsed * 1e6 / (size // PAGE)


def main() -> None:
    mib = int(sys.argv[1])
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    for _ in range(rounds):
        print(f"{mib} MiB: {touch(mib):.2f} us/page", flush=True)


if __name__ == "__main__":
    main()
