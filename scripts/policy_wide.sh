#!/bin/bash
# Runs every row of the policy table (docs/policy_table.md) at 0.97x, 1x and
# 1.03x its capacity through `examples/replay.rs` (57 runs, two at a time)
# and prints the sum of the miss ratios: a yardstick for a policy change
# that does not hang on one capacity per row (docs/design.md, "Fifth
# sitting"). Needs the traces of `scripts/policy_table.py` in target/traces
# and a release build of the replay:
#   cargo build --release --example replay && bash scripts/policy_wide.sh [OUT]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-target/policy_wide.txt}
B=${B:-target/release/examples/replay}
T=target/traces
caps() { for c in "$@"; do for f in 97 100 103; do echo $(( (c * f + 50) / 100 )); done; done; }
run() { "$B" "$T/$1.u64" $(for c in $(caps "${@:2}"); do echo --capacity-pages "$c"; done) 2>/dev/null | grep '^trace=' ; }
( run zipf99_scan 2463 24632 98526 > "$OUT.a"; run loop 100 1000 4000 8333 >> "$OUT.a"; run redb 162 1618 6470 >> "$OUT.a" ) &
( run zipf08 966 9658 38632 > "$OUT.b"; run phases 496 4963 19853 >> "$OUT.b"; run redb_reads 100 1003 4011 >> "$OUT.b" ) &
wait
cat "$OUT.a" "$OUT.b" > "$OUT"
rm "$OUT.a" "$OUT.b"
awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^miss_ratio=/) { split($i, kv, "="); s += kv[2]; n++ } }
     END { printf "sum of %d miss ratios: %.4f\n", n, s }' "$OUT"
# walkv's trace (sixth sitting; `policy_table.py --record-walkv`) is summed
# apart, so the 57 stay comparable with the sums in docs/design.md.
if [ -f "$T/walkv.u64" ]; then
  run walkv 17 172 688 > "$OUT.walkv"
  awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^miss_ratio=/) { split($i, kv, "="); s += kv[2]; n++ } }
       END { printf "walkv: sum of %d miss ratios: %.4f\n", n, s }' "$OUT.walkv"
fi
