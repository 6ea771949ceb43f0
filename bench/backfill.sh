#!/usr/bin/env bash
# Backfill: an archived range over a capped connection, the service's 25 MB/s per connection
# scaled down. Compares kvs-dl (default: up to 5 GetMediaForFragmentList connections),
# kvs-dl --parallel 1 (one GetMedia session) and `aws kinesis-video-media get-media`.
#
#   bench/backfill.sh [MEGABYTES] [BANDWIDTH] [ARCHIVE_SCALE]   (defaults: 100, 5MB, 0.1)
#
# kvs-emu serves MEGABYTES of 3 MB fragments (2 s of 12 Mbit/s video each) with every
# connection capped at BANDWIDTH bytes/s. An hour at 12 Mbit/s is 5.4 GB: 216 s on one 25 MB/s
# connection. Here both the size and the cap are scaled down, so ARCHIVE_SCALE
# (KVS_DL_ARCHIVE_SCALE) scales kvs-dl's 25 MB threshold and 64 MB batches to match: 0.1 makes
# 6.4 MB batches, about 1.3 s each at 5 MB/s (2.6 s at the service's cap with 64 MB ones).
# /usr/bin/time gives wall time and peak RSS; the spool beside the output is sampled every
# 20 ms for its peak. One run each, in turn.
set -euo pipefail
cd "$(dirname "$0")/.."

MB=${1:-100}
BANDWIDTH=${2:-5MB}
SCALE=${3:-0.1}
PORT=${KVS_BENCH_PORT:-45670}
DATA_PORT=$((PORT + 1))
FRAGMENT=3000000

for tool in /usr/bin/time python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is needed" >&2; exit 1; }
done

cargo build --release --locked --quiet
target=${CARGO_TARGET_DIR:-$PWD/target}
bin=$target/release
work=$target/bench-backfill
rm -rf "$work" && mkdir -p "$work"
trap 'kill $emu 2>/dev/null || true; rm -rf "$work"/out*' EXIT

fragments=$(( (MB * 1000000 + FRAGMENT - 1) / FRAGMENT ))
"$bin/kvs-emu" --port "$PORT" --data-port "$DATA_PORT" --no-verify --idle-close 200ms \
    --bandwidth "$BANDWIDTH" --stream "cam=synthetic:$fragments" --fragment-bytes "$FRAGMENT" \
    > "$work/emu.log" 2>&1 &
emu=$!
for _ in $(seq 100); do
    grep -q "control endpoint" "$work/emu.log" 2>/dev/null && break
    sleep 0.1
done

export AWS_ACCESS_KEY_ID=AKIDKVSEMULATOR AWS_SECRET_ACCESS_KEY=kvs-emu-secret AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true KVS_DL_ARCHIVE_SCALE=$SCALE
kvs="$bin/kvs-dl --endpoint-url http://127.0.0.1:$PORT --stream-name cam --start earliest --end now --progress json --force"

# The listing alone: what the parallel path pays before its first byte.
/usr/bin/time -f '%e' -o "$work/list.time" \
    $bin/kvs-dl list --endpoint-url http://127.0.0.1:$PORT --stream-name cam --json > "$work/list.jsonl"
listed=$(grep -c '"fragment"' "$work/list.jsonl")

tools=(
    "kvs-dl (default, --parallel 5)|$kvs -o out.mkv"
    "kvs-dl --format raw (--parallel 5)|$kvs --format raw -o out.raw"
    "kvs-dl --parallel 1|$kvs --parallel 1 -o out.mkv"
)
if command -v aws >/dev/null; then
    tools+=("aws get-media|aws kinesis-video-media get-media --endpoint-url http://127.0.0.1:$DATA_PORT --stream-name cam --start-selector StartSelectorType=EARLIEST out.aws > /dev/null")
fi

results=$work/results.txt
: > "$results"
for entry in "${tools[@]}"; do
    name=${entry%%|*}
    cmd=${entry#*|}
    rm -f "$work"/out.*
    echo 0 > "$work/spool.peak"
    sync
    # Peak spool: the sum of the spool files beside the output, sampled.
    (
        peak=0
        while :; do
            now=$(find "$work" -maxdepth 1 -name '.kvs-dl-spool.*' -printf '%s\n' 2>/dev/null | awk '{s += $1} END {print s + 0}')
            (( now > peak )) && peak=$now && echo "$peak" > "$work/spool.peak"
            sleep 0.02
        done
    ) &
    sampler=$!
    (cd "$work" && /usr/bin/time -f '%e %U %S %M' -o "$work/time" bash -c "$cmd" 2> "$work/stderr") \
        || { kill $sampler; echo "bench: $name failed:" >&2; cat "$work/stderr" >&2; exit 1; }
    kill $sampler 2>/dev/null; wait $sampler 2>/dev/null || true
    out=$(ls -t "$work"/out.* | head -1)
    written=$(grep -c '"event":"fragment"' "$work/stderr" || true)
    [[ $name == aws* ]] && written=-
    echo "$name|$(stat -c %s "$out")|$written|$(cat "$work/spool.peak")|$(cat "$work/time")" >> "$results"
    echo "$name: $(cat "$work/time")" >&2
    cp "$work/stderr" "$work/stderr.$(echo "$name" | tr -c 'a-z0-9' _)"
done

python3 - "$results" "$MB" "$BANDWIDTH" "$SCALE" "$listed" "$(cat "$work/list.time")" "$(nproc)" <<'EOF'
import sys, datetime
rows = {}
for line in open(sys.argv[1]):
    name, size, written, spool, times = line.rstrip("\n").split("|")
    wall, user, system, rss = times.split()
    rows[name] = (int(size), written, int(spool), float(wall), float(user) + float(system), int(rss))
mb, bw, scale, listed, list_s, cores = sys.argv[2:8]
print(f"Backfill, {datetime.date.today()}, {cores} cores: {listed} fragments (~{mb} MB) from kvs-emu, "
      f"every connection capped at {bw}/s, KVS_DL_ARCHIVE_SCALE={scale}; listing alone {float(list_s):.2f} s; one run each")
print()
print("| tool | wall s | MB/s | CPU s | peak RSS MB | peak spool MB | fragments | vs --parallel 1 | vs aws get-media |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
one = rows.get("kvs-dl --parallel 1")
aws = rows.get("aws get-media")
for name, (size, written, spool, wall, cpu, rss) in rows.items():
    ratio = lambda base: f"{base[3] / wall:.2f}x" if base else ""
    print(f"| {name} | {wall:.2f} | {size / 1e6 / wall:.1f} | {cpu:.2f} | {rss / 1024:.1f} | "
          f"{spool / 1e6:.1f} | {written} | {ratio(one)} | {ratio(aws)} |")
EOF
