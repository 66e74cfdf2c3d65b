#!/usr/bin/env python3
"""Times shell commands interleaved, one run of each per round, and prints
each one's median and its ratio to the first command's median.

hyperfine runs all of one command's runs, then the next command's: on a
shared VM whose speed drifts over a minute that drift lands in the ratio.
Interleaving puts every command under the same drift.

    python3 benches/interleave.py ROUNDS NAME=COMMAND [NAME=COMMAND ...]
"""
import statistics
import subprocess
import sys
import time


def main() -> int:
    if len(sys.argv) < 3 or not sys.argv[1].isdigit() or any("=" not in a for a in sys.argv[2:]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    rounds = int(sys.argv[1])
    cmds = [a.split("=", 1) for a in sys.argv[2:]]
    times = {name: [] for name, _ in cmds}
    for _ in range(rounds):
        for name, cmd in cmds:
            start = time.perf_counter()
            subprocess.run(cmd, shell=True, check=True)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times[cmds[0][0]])
    for name, _ in cmds:
        med = statistics.median(times[name])
        print(f"{name:12s} median {med * 1000:8.1f} ms   min {min(times[name]) * 1000:8.1f} ms   "
              f"time / {cmds[0][0]}'s: {med / base:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
