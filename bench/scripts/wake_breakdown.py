#!/usr/bin/env python3
"""Where a woken tenant's client waited, from a worker's log (`pico bench density --keep-work`).

The worker logs three lines per wake-up on a connection:
  `woke tenant tenant=T ... swap_in_ms=S total_ms=W`   (W: from the swap slot taken to running)
  `woken tenant answered its client tenant=T waited_ms=C` (C: from the connection's accept to
                                                            the first byte of the answer)
so C - W is the wait for a swap slot (plus the answer itself, ~1 ms), and W - S the wake-up's
own steps before its restore (planning, making room). Prints p50 / p95 / p99 / max of each
over the first N wake-ups (a density run's first burst phase) and over the rest.

    wake_breakdown.py WORKER_LOG [N]     (N: wake-ups of the first phase; default 289, the
                                          20/s burst of 15 s that `--seed 16` draws)
"""
import re
import sys

FIELD = re.compile(r'(\w+)=("[^"]*"|\S+)')


def pct(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def wake_ups(log):
    """(tenant, swap_in_ms, woke_total_ms, client_waited_ms) per wake-up, in log order."""
    woke = {}
    for line in log:
        if "woke tenant" in line and 'reason="connection"' in line:
            f = dict(FIELD.findall(line))
            woke[f["tenant"].strip('"')] = (float(f["swap_in_ms"]), float(f["total_ms"]))
        elif "answered its client" in line:
            f = dict(FIELD.findall(line))
            tenant = f["tenant"].strip('"')
            if tenant in woke:
                swap_in, total = woke.pop(tenant)
                yield tenant, swap_in, total, float(f["waited_ms"])


def show(name, rows):
    if not rows:
        return
    print(f"{name}: {len(rows)} wake-ups, ms p50 / p95 / p99 / max")
    parts = {
        "client waited (accept to answer)": [r[3] for r in rows],
        "slot wait and answer (waited - woke)": [r[3] - r[2] for r in rows],
        "woke (slot taken to running)": [r[2] for r in rows],
        "restore (swap_in_ms)": [r[1] for r in rows],
    }
    for label, values in parts.items():
        p = [pct(values, q) for q in (50, 95, 99)]
        print(f"  {label:38s} {p[0]:6.1f} {p[1]:6.1f} {p[2]:6.1f} {max(values):6.1f}")


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    first = int(sys.argv[2]) if len(sys.argv) > 2 else 289
    with open(sys.argv[1], errors="replace") as log:
        rows = list(wake_ups(log))
    show("first phase", rows[:first])
    show("the rest", rows[first:])


if __name__ == "__main__":
    main()
