#!/usr/bin/env python3
"""Times shell commands interleaved, one run of each per round, and prints
each one's median and its ratio to the first command's median.

hyperfine runs all of one command's runs, then the next command's: on a
shared VM whose speed drifts over a minute that drift lands in the ratio.
Interleaving puts every command under the same drift.

    python3 benches/interleave.py [--prepare CMD] ROUNDS NAME=COMMAND [NAME=COMMAND ...]

--prepare runs CMD, untimed, before every timed run (as hyperfine's
--prepare): `sync`, so that no run pays for the previous run's writeback.
"""
import statistics
import subprocess
import sys
import time


def main() -> int:
    args = sys.argv[1:]
    prepare = None
    if len(args) >= 2 and args[0] == "--prepare":
        prepare, args = args[1], args[2:]
    if len(args) < 2 or not args[0].isdigit() or any("=" not in a for a in args[1:]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    rounds = int(args[0])
    cmds = [a.split("=", 1) for a in args[1:]]
    times = {name: [] for name, _ in cmds}
    for _ in range(rounds):
        for name, cmd in cmds:
            if prepare:
                subprocess.run(prepare, shell=True, check=True)
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
