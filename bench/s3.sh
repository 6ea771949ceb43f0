#!/usr/bin/env bash
# The same download to S3 (SeaweedFS on loopback, `weed mini` from the venv scripts/test
# installs) and to a local file: wall time, MB/s and peak RSS, one GetMedia session each.
#
#   bench/s3.sh [GIGABYTES] [FORMAT]   (defaults: 1 GB, mkv)
#
# Both servers share this machine's cores with kvs-dl, so the S3 row is a floor, not what a
# real bucket gives; the RSS difference is what the multipart buffers cost.
set -euo pipefail
cd "$(dirname "$0")/.."
GB=${1:-1}
FORMAT=${2:-mkv}
weed=$PWD/.ci/venv/bin/weed
for tool in ffmpeg aws /usr/bin/time "$weed"; do
    command -v "$tool" >/dev/null || { echo "s3 bench: $tool is needed (scripts/test installs weed)" >&2; exit 1; }
done

cargo build --release --locked --quiet --bins
target=${CARGO_TARGET_DIR:-$PWD/target}
bin=$target/release
work=$(mktemp -d)
emu= ; weed_pid=
trap 'kill $emu $weed_pid 2>/dev/null || true; wait 2>/dev/null; rm -rf "$work"' EXIT

export AWS_ACCESS_KEY_ID=AKIDKVSEMULATOR AWS_SECRET_ACCESS_KEY=kvs-emu-secret
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

port=46400
cat > "$work/s3.json" <<JSON
{"identities":[{"name":"bench","credentials":[{"accessKey":"$AWS_ACCESS_KEY_ID","secretKey":"$AWS_SECRET_ACCESS_KEY"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
"$weed" mini -dir="$work/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port=$port \
    -master.port=$((port + 1)) -volume.port=$((port + 2)) -filer.port=$((port + 3)) \
    -admin.port=$((port + 4)) -debug.port=$((port + 5)) -s3.config="$work/s3.json" \
    -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -master.telemetry=false > "$work/weed.log" 2>&1 &
weed_pid=$!
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$port
for _ in $(seq 240); do
    aws --endpoint-url "$AWS_ENDPOINT_URL_S3" s3 mb s3://bench >/dev/null 2>&1 && break
    sleep 0.25
done

ffmpeg -v error -y -f lavfi -i testsrc2=duration=10:size=1280x720:rate=25 \
    -c:v libx264 -preset ultrafast -b:v 8M -g 50 -bf 0 -pix_fmt yuv420p "$work/clip.mkv"
clip=$(stat -c %s "$work/clip.mkv")
"$bin/kvs-emu" --port 0 --no-verify --idle-close 200ms --stream "big=$work/clip.mkv" \
    --repeat $(( (GB * 1000000000 + clip - 1) / clip )) > "$work/emu.log" 2>&1 &
emu=$!
endpoint=""
for _ in $(seq 100); do
    endpoint=$(sed -n 's/^kvs-emu: control endpoint \([^ ]*\).*/\1/p' "$work/emu.log")
    [ -n "$endpoint" ] && break
    sleep 0.1
done

kvs="$bin/kvs-dl --endpoint-url $endpoint --stream-name big --start earliest --end now --parallel 1 --format $FORMAT --force --progress log"
echo "| destination | wall s | MB/s | peak RSS MB |"
echo "|---|---:|---:|---:|"
for dest in "local file|$work/out.$FORMAT" "s3:// (SeaweedFS)|s3://bench/out.$FORMAT"; do
    name=${dest%%|*}
    out=${dest#*|}
    /usr/bin/time -f '%e %M' -o "$work/time" $kvs -o "$out" 2> "$work/stderr" \
        || { echo "s3 bench: $name failed:" >&2; cat "$work/stderr" >&2; exit 1; }
    read -r wall rss < "$work/time"
    size=$(( GB * 1000 ))
    echo "| $name | $wall | $(awk -v s=$size -v w="$wall" 'BEGIN {printf "%.0f", s / w}') | $(awk -v r="$rss" 'BEGIN {printf "%.1f", r / 1024}') |"
    rm -f "$work/out.$FORMAT"
done
