#!/usr/bin/env bash
# The same download to S3 (SeaweedFS on loopback, `weed mini` from the venv scripts/test
# installs) and to a local file: wall time, MB/s and peak RSS, one GetMedia session each.
#
#   bench/s3.sh [GIGABYTES] [FORMAT]   (defaults: 1 GB, mkv)
#
# Both servers share this machine's cores with kvs-dl, so the S3 row is a floor, not what a
# real bucket gives; the RSS difference is what the multipart buffers cost. Two more rows upload
# the local file with clients nobody here wrote (one curl PUT; `aws s3 cp` with two 5 MB parts in
# flight): the ceiling of this SeaweedFS setup. CPU s is the client's (user + system); SeaweedFS
# CPU s is the server's during that row.
set -euo pipefail
cd "$(dirname "$0")/.."
GB=${1:-1}
FORMAT=${2:-mkv}
weed=$PWD/.ci/venv/bin/weed
for tool in ffmpeg aws curl cmp /usr/bin/time "$weed"; do
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
    kill -0 $weed_pid 2>/dev/null || { echo "s3 bench: weed exited:" >&2; tail -3 "$work/weed.log" >&2; exit 1; }
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
weed_cpu() { # clock ticks used so far by the SeaweedFS processes
    local t=0 p
    for p in $weed_pid $(pgrep -P "$weed_pid" || true); do
        t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo $t
}
hz=$(getconf CLK_TCK)
export AWS_CONFIG_FILE=$work/aws-config
aws configure set default.s3.max_concurrent_requests 2
aws configure set default.s3.multipart_chunksize 5MB
row() { # NAME COMMAND...: one timed row
    local name=$1 w0 w1 wall rss user sys
    shift
    w0=$(weed_cpu)
    /usr/bin/time -f '%e %M %U %S' -o "$work/time" "$@" 2> "$work/stderr" \
        || { echo "s3 bench: $name failed:" >&2; cat "$work/stderr" >&2; exit 1; }
    w1=$(weed_cpu)
    read -r wall rss user sys < "$work/time"
    echo "| $name | $wall | $(awk -v s="$size" -v w="$wall" 'BEGIN {printf "%.0f", s / 1e6 / w}') | $(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.2f", u + s}') | $(awk -v a="$w0" -v b="$w1" -v hz="$hz" 'BEGIN {printf "%.2f", (b - a) / hz}') | $(awk -v r="$rss" 'BEGIN {printf "%.1f", r / 1024}') |"
}
echo "| destination | wall s | MB/s | CPU s | SeaweedFS CPU s | peak RSS MB |"
echo "|---|---:|---:|---:|---:|---:|"
local_out=$work/out.$FORMAT
# Warm-up, not reported: the emulator's first session, and SeaweedFS's first upload (it creates
# and grows its volumes then, which would slow down whichever row came first).
$kvs -o "$local_out" 2> "$work/stderr" || { cat "$work/stderr" >&2; exit 1; }
size=$(stat -c %s "$local_out")
curl -sS --fail --aws-sigv4 "aws:amz:$AWS_REGION:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    -T "$local_out" -o /dev/null "$AWS_ENDPOINT_URL_S3/bench/warm-up"
rm -f "$local_out"
row "local file" $kvs -o "$local_out"
row "s3:// (SeaweedFS)" $kvs -o "s3://bench/out.$FORMAT"
aws s3 cp --quiet "s3://bench/out.$FORMAT" "$work/got"
cmp "$work/got" "$local_out" || { echo "s3 bench: the object differs from the local file" >&2; exit 1; }
rm -f "$work/got"
row "ceiling: curl PUT of the local file" curl -sS --fail --aws-sigv4 "aws:amz:$AWS_REGION:s3" \
    --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" -T "$local_out" -o /dev/null \
    "$AWS_ENDPOINT_URL_S3/bench/curl.$FORMAT"
row "ceiling: aws s3 cp (2 × 5 MB parts)" aws s3 cp --quiet "$local_out" "s3://bench/cli.$FORMAT"
