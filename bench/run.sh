#!/usr/bin/env bash
# Measures kvs-dl against the transfer limit (curl) and the path users follow today (AWS CLI
# get-media, then an ffmpeg remux to get a playable file), on one machine, in one run.
#
#   bench/run.sh [GIGABYTES] [RUNS] [MEMORY_GIGABYTES]   (defaults: 2 GB, 3 runs, 10 GB)
#
# kvs-emu serves one archive stream from memory: a generated 720p H.264 clip (ffmpeg), cut at
# its key frames and repeated with fresh fragment numbers until it holds GIGABYTES. Each tool
# downloads all of it to a file on the same disk; the tools take turns so that drift hits all
# alike. /usr/bin/time gives wall time, CPU (user + sys) and peak RSS; the table shows medians.
# Then peak memory: one MEMORY_GIGABYTES pull, and a stream of 40 MB fragments (the service's
# limit is 50 MB) to a file and to a pipe.
# Then the S3 rows (bench/s3.sh): the same GIGABYTES to SeaweedFS on loopback against a local
# file, with the ceiling of that server (a curl PUT, aws s3 cp); KVS_BENCH_S3=0 skips them.
# Last, the fleet rows (bench/fleet.sh): one process following 100 live streams, and catching up
# 40 archived ones. KVS_BENCH_FLEET holds fleet.sh's arguments (default "60": 60 s of media per
# live stream, its other defaults); KVS_BENCH_FLEET=0 skips it. A fleet target missed makes
# the exit status 1, after every table is printed.
set -euo pipefail
cd "$(dirname "$0")/.."

GB=${1:-2}
RUNS=${2:-3}
MEMORY_GB=${3:-10}
PORT=${KVS_BENCH_PORT:-45660}
DATA_PORT=$((PORT + 1))

for tool in ffmpeg curl /usr/bin/time python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is needed" >&2; exit 1; }
done

cargo build --release --locked --quiet
target=${CARGO_TARGET_DIR:-$PWD/target}
bin=$target/release
work=$target/bench
rm -rf "$work" && mkdir -p "$work"
trap 'kill $emu $emu_memory 2>/dev/null || true; rm -rf "$work"/out*' EXIT
emu_memory=

# 10 s of 720p at 8 Mbit/s, a key frame every 2 s: 2 MB fragments, like a busy camera.
ffmpeg -v error -y -f lavfi -i testsrc2=duration=10:size=1280x720:rate=25 \
    -c:v libx264 -preset ultrafast -b:v 8M -g 50 -bf 0 -pix_fmt yuv420p "$work/clip.mkv"
clip=$(stat -c %s "$work/clip.mkv")
repeat=$(( (GB * 1000000000 + clip - 1) / clip ))

"$bin/kvs-emu" --port "$PORT" --data-port "$DATA_PORT" --no-verify --idle-close 200ms \
    --stream "big=$work/clip.mkv" --repeat "$repeat" > "$work/emu.log" 2>&1 &
emu=$!
for _ in $(seq 100); do
    grep -q "control endpoint" "$work/emu.log" 2>/dev/null && break
    sleep 0.1
done

export AWS_ACCESS_KEY_ID=AKIDKVSEMULATOR AWS_SECRET_ACCESS_KEY=kvs-emu-secret AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
body='{"StreamName":"big","StartSelector":{"StartSelectorType":"EARLIEST"}}'
# One GetMedia session, as curl and the AWS CLI make: the parallel archived-range path pays
# off against the service's 25 MB/s per connection (bench/backfill), not on uncapped loopback,
# where its spool only adds writes; it has a row of its own.
kvs="$bin/kvs-dl --endpoint-url http://127.0.0.1:$PORT --stream-name big --start earliest --end now --progress log --force --parallel 1"

# name|command; each runs in $work and writes there.
tools=(
    "curl|curl -sS -X POST -H 'Content-Type: application/json' -d '$body' -o out.curl http://127.0.0.1:$DATA_PORT/getMedia"
    "curl && sync FILE (durable)|curl -sS -X POST -H 'Content-Type: application/json' -d '$body' -o out.curl http://127.0.0.1:$DATA_PORT/getMedia && sync out.curl"
    "kvs-dl --format raw|$kvs --format raw -o out.raw"
    "kvs-dl --format mkv|$kvs --format mkv -o out.mkv"
    "kvs-dl --format mp4|$kvs --format mp4 -o out.mp4"
    "kvs-dl --format mp4 --faststart|$kvs --format mp4 --faststart -o out.fast.mp4"
    "kvs-dl --format mkv --parallel 5 (uncapped)|${kvs% --parallel 1} --format mkv -o out.mkv"
)
if command -v aws >/dev/null; then
    tools+=(
        "aws get-media|aws kinesis-video-media get-media --endpoint-url http://127.0.0.1:$DATA_PORT --stream-name big --start-selector StartSelectorType=EARLIEST out.aws > /dev/null"
        "ffmpeg -c copy (after get-media)|ffmpeg -v error -y -i out.aws -c copy out.remux.mkv"
        "ffmpeg -c copy -movflags +faststart (after get-media)|ffmpeg -v error -y -i out.aws -c copy -movflags +faststart out.remux.mp4"
    )
fi

results=$work/results.txt
: > "$results"
for run in $(seq "$RUNS"); do
    for entry in "${tools[@]}"; do
        name=${entry%%|*}
        cmd=${entry#*|}
        # The remux reads what get-media wrote in this round; everything else starts clean.
        [[ $name == ffmpeg* ]] || rm -f "$work"/out.curl "$work"/out.raw "$work"/out.mkv "$work"/out.mp4 \
            "$work"/out.fast.mp4 "$work"/out.remux.mkv "$work"/out.remux.mp4
        sync
        (cd "$work" && /usr/bin/time -f '%e %U %S %M' -o "$work/time" bash -c "$cmd" 2> "$work/stderr") \
            || { echo "bench: $name failed:" >&2; cat "$work/stderr" >&2; exit 1; }
        out=$(ls -t "$work"/out.* 2>/dev/null | head -1)
        bytes=$(stat -c %s "$out")
        [[ $name == "aws get-media" ]] && bytes=$(stat -c %s "$work/out.aws")
        echo "$name|$bytes|$(cat "$work/time")" >> "$results"
        echo "run $run: $name: $(cat "$work/time")" >&2
    done
    rm -f "$work"/out.aws
done

# Peak memory: a long pull, and fragments near the service's 50 MB limit.
kill $emu
"$bin/kvs-emu" --port "$PORT" --data-port "$DATA_PORT" --no-verify --idle-close 200ms \
    --stream "long=$work/clip.mkv" --repeat $(( (MEMORY_GB * 1000000000 + clip - 1) / clip )) \
    --stream frag40=synthetic:25 --fragment-bytes 40MB > "$work/emu.log" 2>&1 &
emu_memory=$!
for _ in $(seq 100); do
    grep -q "control endpoint" "$work/emu.log" 2>/dev/null && break
    sleep 0.1
done
memory=$work/memory.txt
: > "$memory"
measure_memory() {
    local name=$1; shift
    (cd "$work" && /usr/bin/time -f '%e %U %S %M' -o "$work/time" bash -c "$*" 2> "$work/stderr") \
        || { echo "bench: $name failed:" >&2; cat "$work/stderr" >&2; exit 1; }
    echo "$name|$(cat "$work/time")" >> "$memory"
    echo "memory: $name: $(cat "$work/time")" >&2
    rm -f "$work"/out.*
}
kvs_mem="$bin/kvs-dl --endpoint-url http://127.0.0.1:$PORT --start earliest --end now --progress log --force --parallel 1"
measure_memory "kvs-dl mkv, $MEMORY_GB GB pull" "$kvs_mem --stream-name long -o out.mkv"
measure_memory "kvs-dl mp4, $MEMORY_GB GB pull" "$kvs_mem --stream-name long --format mp4 -o out.mp4"
measure_memory "kvs-dl raw, 40 MB fragments" "$kvs_mem --stream-name frag40 --format raw -o out.raw"
measure_memory "kvs-dl mkv, 40 MB fragments" "$kvs_mem --stream-name frag40 -o out.mkv"
measure_memory "kvs-dl mkv to a pipe, 40 MB fragments" "$kvs_mem --stream-name frag40 -o - | cat > /dev/null"
measure_memory "kvs-dl mkv --parallel 5, 40 MB fragments" "${kvs_mem% --parallel 1} --stream-name frag40 -o out.mkv"

python3 - "$results" "$GB" "$(nproc)" "$(free -g | awk '/Mem:/ {print $2}')" <<'EOF'
import statistics, sys, collections, datetime
rows = collections.defaultdict(list)
for line in open(sys.argv[1]):
    name, size, times = line.rstrip("\n").split("|")
    wall, user, system, rss = times.split()
    rows[name].append((int(size), float(wall), float(user) + float(system), int(rss)))
med = {n: tuple(statistics.median(v[i] for v in runs) for i in range(4)) for n, runs in rows.items()}
curl = med["curl"]
aws = {}
if "aws get-media" in med:
    g = med["aws get-media"]
    for kind, remux in [("mkv", "ffmpeg -c copy (after get-media)"),
                        ("mp4", "ffmpeg -c copy -movflags +faststart (after get-media)")]:
        f = med[remux]
        aws[kind] = (g[0], g[1] + f[1], g[2] + f[2], max(g[3], f[3]))
        med[f"aws get-media + ffmpeg to {kind}"] = aws[kind]
print(f"kvs-dl benchmark, {datetime.date.today()}, {sys.argv[3]} cores, {sys.argv[4]} GiB, {sys.argv[2]} GB GetMedia body, medians of {len(rows['curl'])} runs")
print()
print("| tool | MB/s | wall s | CPU s per GB | peak RSS MB | wall vs curl | CPU vs curl | wall vs AWS CLI path |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for name, (size, wall, cpu, rss) in med.items():
    gb = curl[0] / 1e9
    path = aws.get("mp4" if "mp4" in name else "mkv")
    vs_aws = f"{wall / path[1]:.2f}x" if path and name.startswith("kvs-dl") and "raw" not in name else ""
    print(f"| {name} | {curl[0] / 1e6 / wall:.0f} | {wall:.2f} | {cpu / gb:.2f} | {rss / 1024:.1f} | {wall / curl[1]:.2f}x | {cpu / curl[2]:.2f}x | {vs_aws} |")
print()
print("| memory check | wall s | peak RSS MB |")
print("|---|---:|---:|")
for line in open(sys.argv[1].replace("results.txt", "memory.txt")):
    name, times = line.rstrip("\n").split("|")
    wall, _, _, rss = times.split()
    print(f"| {name} | {float(wall):.2f} | {int(rss) / 1024:.1f} |")
EOF

kill $emu_memory 2>/dev/null || true
if [[ ${KVS_BENCH_S3-1} != 0 ]]; then
    echo
    bench/s3.sh "$GB" mkv
fi

fleet=${KVS_BENCH_FLEET-60}
if [[ $fleet != 0 ]]; then
    echo
    # Word splitting is wanted: the variable holds the arguments.
    # shellcheck disable=SC2086
    bench/fleet.sh $fleet || exit $?
fi
