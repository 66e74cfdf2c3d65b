#!/usr/bin/env bash
# Times the cat and dd examples against coreutils on a 1 GiB file hot in the
# kernel's cache: to /dev/null, into a pipe, and into a file. Installs
# hyperfine from Debian's packages if it is missing.
#
#   bash benches/tools.sh [SIZE_MiB]     (default 1024)
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib="${1:-1024}"
if ! command -v hyperfine >/dev/null; then
  apt-get install -y hyperfine >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y hyperfine >/dev/null; }
fi
cargo build --release --example cat --example dd >/dev/null 2>&1
cat_ex=target/release/examples/cat
dd_ex=target/release/examples/dd
dir=/var/tmp/page-cache-tools
mkdir -p "$dir"
in="$dir/in-${size_mib}M"
if [ ! -f "$in" ] || [ "$(stat -c %s "$in")" -ne $((size_mib << 20)) ]; then
  head -c $((size_mib << 20)) /dev/urandom > "$in"
fi
# cat streams through its default 8 MiB cache (32 KiB pages); dd's output file gets room
# in the cache, as coreutils has the kernel's.
dd_cache=$(( (size_mib + 64) << 20 ))
warm="cat $in > /dev/null"
common=(--warmup 2 --runs 10 --prepare "$warm" --style basic)
# Into a file: the last run's output is removed and synced away first.
# Truncating it inside the timed command cost about 0.6 s (freeing 1 GiB of
# the kernel's cache, and waiting for its writeback without the sync),
# the same for both programs, and hid what they themselves spend.
file_common=(--warmup 2 --runs 10 --prepare "rm -f $dir/out; sync; $warm" --style basic)

echo "## cat to /dev/null"
hyperfine "${common[@]}" -n coreutils "cat $in > /dev/null" -n page-cache "$cat_ex $in > /dev/null"
echo "## cat into a pipe"
hyperfine "${common[@]}" -n coreutils "cat $in | tail -c 1 > /dev/null" -n page-cache "$cat_ex $in | tail -c 1 > /dev/null"
echo "## cat into a new file"
hyperfine "${file_common[@]}" -n coreutils "cat $in > $dir/out" -n page-cache "$cat_ex $in > $dir/out"
echo "## dd bs=1M into a new file"
hyperfine "${file_common[@]}" -n coreutils "dd if=$in of=$dir/out bs=1M status=none" \
  -n page-cache "PAGE_CACHE_BYTES=$dd_cache $dd_ex if=$in of=$dir/out bs=1M status=none"
echo "## dd bs=1M into a new file, dd's default 64 MiB cache (frames reused, no first-touch faults)"
hyperfine "${file_common[@]}" -n coreutils "dd if=$in of=$dir/out bs=1M status=none" \
  -n page-cache "$dd_ex if=$in of=$dir/out bs=1M status=none"
rm -f "$dir/out"
echo "## cat into a new file, interleaved (15 rounds of one run each, rm and sync before each, medians)"
cat "$in" > /dev/null
python3 benches/interleave.py --prepare "rm -f $dir/out; sync" 15 "coreutils=cat $in > $dir/out" "page-cache=$cat_ex $in > $dir/out"
rm -f "$dir/out"
echo "## dd bs=1M into a new file, default cache, interleaved (15 rounds, rm and sync before each, medians)"
python3 benches/interleave.py --prepare "rm -f $dir/out; sync" 15 "coreutils=dd if=$in of=$dir/out bs=1M status=none" \
  "page-cache=$dd_ex if=$in of=$dir/out bs=1M status=none"
rm -f "$dir/out"
echo "## cat to /dev/null, interleaved (31 rounds of one run each, medians)"
cat "$in" > /dev/null
python3 benches/interleave.py 31 "coreutils=cat $in > /dev/null" "page-cache=$cat_ex $in > /dev/null"
