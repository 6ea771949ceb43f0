#!/usr/bin/env bash
# Live viewing latency: how soon a frame is on kvs-dl's standard output after its last byte
# left the (emulated) service.
#
#   bench/latency.sh [FRAGMENTS]   (default 20 one-second fragments per run)
#
# kvs-emu serves a live stream frame by frame (--frame-paced: each frame at its own time, as a
# camera sends it) and logs when each frame's last byte went out; kvs-dl follows it with
# `-o -`; the example `frame_latency` reads kvs-dl's output, notes when each frame is whole
# there, and matches it with the log. The raw row is the whole-fragment release that -o -
# used before (and raw still uses): a frame waits for the end of its fragment.
set -euo pipefail
cd "$(dirname "$0")/.."
FRAGMENTS=${1:-20}
command -v ffmpeg >/dev/null || { echo "latency: ffmpeg is needed" >&2; exit 1; }

cargo build --release --locked --quiet --bins
cargo build --release --locked --quiet -p kvs-emu --example frame_latency
target=${CARGO_TARGET_DIR:-$PWD/target}
bin=$target/release
work=$(mktemp -d)
trap 'kill $emu 2>/dev/null || true; rm -rf "$work"' EXIT
emu=
# 25 fps H.264 and AAC, a key frame every second: one-second fragments.
ffmpeg -v error -y -f lavfi -i testsrc2=duration=10:size=640x360:rate=25 \
    -f lavfi -i sine=frequency=440:duration=10 -c:v libx264 -preset ultrafast -g 25 -bf 0 \
    -pix_fmt yuv420p -c:a aac -shortest "$work/clip.mkv"

export AWS_ACCESS_KEY_ID=AKIDKVSEMULATOR AWS_SECRET_ACCESS_KEY=kvs-emu-secret AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
echo "| kvs-dl -o - | frames | p50 ms | p99 ms | max ms |"
echo "|---|---:|---:|---:|---:|"
for format in mkv raw; do
    rm -f "$work/frames.log"
    "$bin/kvs-emu" --port 0 --stream "cam=$work/clip.mkv" --repeat $(( FRAGMENTS / 10 + 2 )) \
        --live --frame-paced --frame-log "$work/frames.log" > "$work/emu.log" 2>&1 &
    emu=$!
    endpoint=""
    for _ in $(seq 100); do
        endpoint=$(sed -n 's/^kvs-emu: control endpoint \([^ ]*\).*/\1/p' "$work/emu.log")
        [ -n "$endpoint" ] && break
        sleep 0.1
    done
    result=$("$bin/kvs-dl" --endpoint-url "$endpoint" --stream-name cam --start now \
        --max-fragments "$FRAGMENTS" --format "$format" -o - 2>/dev/null \
        | "$bin/examples/frame_latency" "$work/frames.log")
    read -r _ frames _ p50 _ p99 _ max <<< "$result"
    echo "| --format $format | $frames | $p50 | $p99 | $max |"
    kill $emu; wait $emu 2>/dev/null || true
done
