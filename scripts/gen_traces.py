#!/usr/bin/env python3
"""Synthetic page-access traces for the hit-ratio harness (issue 24).

Writes one ``NAME.u64`` file per trace into OUTDIR: little-endian u64 page
indices, one per access. Seeds are fixed, so the files are identical on every
run. Needs numpy.

    python3 scripts/gen_traces.py target/traces [--only NAME ...]

Traces:
  zipf99_scan  Zipf(0.99) over 50k pages; every 20k accesses a one-pass scan
               of 5k pages never seen before (1M accesses, ~250k pages)
  loop         a loop over 10k pages, 50 times (500k accesses): 1.2x a cache
               of ~8.3k pages
  zipf08       Zipf(0.8) over 100k pages, 1M accesses
  phases       Zipf(0.9) over 30k pages (300k), a loop over 20k other pages
               (15 passes, 300k), the first Zipf phase's distribution again
               (300k)
"""
import argparse
import os
import sys

import numpy as np


def zipf(rng, alpha, n_pages, n_access, perm_seed):
    """Bounded Zipf(alpha) over n_pages ranks by inverse CDF (numpy's own
    zipf needs alpha > 1 and is unbounded); ranks are scattered over the
    page indices 0..n_pages by a fixed permutation, so the hot pages are not
    one contiguous run."""
    ranks = np.arange(1, n_pages + 1, dtype=np.float64)
    cdf = np.cumsum(ranks ** -alpha)
    cdf /= cdf[-1]
    r = np.searchsorted(cdf, rng.random(n_access), side="right")
    r = np.minimum(r, n_pages - 1)
    perm = np.random.default_rng(perm_seed).permutation(n_pages)
    return perm[r].astype(np.uint64)


def gen_zipf99_scan():
    rng = np.random.default_rng(99)
    hot, period, scan_len, periods = 50_000, 20_000, 5_000, 40
    z = zipf(rng, 0.99, hot, period * periods, perm_seed=1099)
    parts = []
    next_fresh = hot
    for p in range(periods):
        parts.append(z[p * period:(p + 1) * period])
        parts.append(np.arange(next_fresh, next_fresh + scan_len, dtype=np.uint64))
        next_fresh += scan_len
    return np.concatenate(parts)


def gen_loop():
    footprint, passes = 10_000, 50
    return np.tile(np.arange(footprint, dtype=np.uint64), passes)


def gen_zipf08():
    rng = np.random.default_rng(8)
    return zipf(rng, 0.8, 100_000, 1_000_000, perm_seed=1008)


def gen_phases():
    rng = np.random.default_rng(3)
    hot = 30_000
    a = zipf(rng, 0.9, hot, 300_000, perm_seed=1003)
    loop = np.tile(np.arange(hot, hot + 20_000, dtype=np.uint64), 15)
    b = zipf(rng, 0.9, hot, 300_000, perm_seed=1003)
    return np.concatenate([a, loop, b])


TRACES = {
    "zipf99_scan": gen_zipf99_scan,
    "loop": gen_loop,
    "zipf08": gen_zipf08,
    "phases": gen_phases,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir")
    ap.add_argument("--only", nargs="*", choices=sorted(TRACES), help="generate only these traces")
    args = ap.parse_args()
    os.makedirs(args.outdir, exist_ok=True)
    for name in args.only or TRACES:
        t = TRACES[name]().astype("<u8")
        path = os.path.join(args.outdir, name + ".u64")
        t.tofile(path)
        print(f"{path}: {len(t)} accesses, {len(np.unique(t))} distinct pages, "
              f"max index {int(t.max())}, {os.path.getsize(path) >> 10} KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
