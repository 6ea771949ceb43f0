#!/usr/bin/env bash
# Fleets: what one kvs-dl process costs per stream, so that a fleet can be sized.
#
#   bench/fleet.sh [SECONDS] [LIVE_STREAMS] [ARCHIVE_STREAMS] [ARCHIVE_MB]
#   (defaults: 60, 100, 40, 1000; ARCHIVE_STREAMS 0 skips part 2)
#
# 1. Live: kvs-emu serves LIVE_STREAMS live streams (2 s fragments of about 250 kB: about
#    1 Mbit/s each), started together; one kvs-dl process follows all of them from the first
#    fragment until each has SECONDS of media (`--start earliest --duration SECONDS`, mkv, a
#    --state-dir), so it runs about SECONDS. /usr/bin/time gives its CPU (user + sys over wall,
#    % of one core) and peak RSS. Then, for every stream, the fragments the run wrote (its
#    `fragment` events) must be the stream's first SECONDS/2 fragments as ListFragments lists
#    them, each once, and its file must exist. The same run with one stream gives the base.
# 2. Catching up: kvs-emu serves ARCHIVE_STREAMS archived streams of 1 MB fragments and one
#    stream holding the same bytes; one kvs-dl process takes each with
#    `--start earliest --end now` (uncapped loopback: kvs-dl's own overhead, not the
#    service's per-connection cap). Throughput ratio: fleet MB/s over single-stream MB/s.
# Prints a table, the cost per stream, and checks the issue's targets (CPU < 5% of a core,
# peak RSS < 200 MB, every fragment once, catch-up >= 0.8x); exits 1 if one is missed.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_=${1:-60}
LIVE=${2:-100}
ARCHIVED=${3:-40}
ARCHIVE_MB=${4:-1000}
PORT=${KVS_BENCH_PORT:-45680}
DATA_PORT=$((PORT + 1))
LIVE_FRAGMENT=250000   # 2 s at 1 Mbit/s
ARCHIVE_FRAGMENT=1000000

for tool in /usr/bin/time python3; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is needed" >&2; exit 1; }
done
(( SECONDS_ % 2 == 0 && SECONDS_ >= 2 )) || { echo "bench: SECONDS must be even (2 s fragments)" >&2; exit 1; }

cargo build --release --locked --quiet
target=${CARGO_TARGET_DIR:-$PWD/target}
bin=$target/release
work=$target/bench-fleet
rm -rf "$work" && mkdir -p "$work"
emu=
trap 'kill $emu 2>/dev/null || true; rm -rf "$work"/out* "$work"/state*' EXIT

export AWS_ACCESS_KEY_ID=AKIDKVSEMULATOR AWS_SECRET_ACCESS_KEY=kvs-emu-secret AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# start_emu ARGS...: a fresh kvs-emu, waiting for its banner.
start_emu() {
    [[ -n $emu ]] && { kill "$emu" 2>/dev/null || true; wait "$emu" 2>/dev/null || true; }
    "$bin/kvs-emu" --port "$PORT" --data-port "$DATA_PORT" --no-verify "$@" \
        > "$work/emu.log" 2>&1 &
    emu=$!
    for _ in $(seq 200); do
        grep -q "control endpoint" "$work/emu.log" 2>/dev/null && return
        sleep 0.05
    done
    echo "bench: kvs-emu did not start:" >&2; cat "$work/emu.log" >&2; exit 1
}

kvs="$bin/kvs-dl --endpoint-url http://127.0.0.1:$PORT"

# measure NAME OUTDIR ARGS...: one kvs-dl run under /usr/bin/time; JSON events to NAME.jsonl.
measure() {
    local name=$1; shift
    /usr/bin/time -f '%e %U %S %M' -o "$work/$name.time" $kvs "$@" --progress json \
        2> "$work/$name.jsonl" \
        || { echo "bench: $name: kvs-dl failed:" >&2; tail -5 "$work/$name.jsonl" >&2; exit 1; }
    echo "bench: $name: wall user sys peak-KiB = $(cat "$work/$name.time")" >&2
}

# live N NAME: N live streams live0..live{N-1}, one kvs-dl for SECONDS of media each.
live() {
    local n=$1 name=$2 streams=()
    for i in $(seq 0 $((n - 1))); do streams+=(--stream "live$i=synthetic:$((SECONDS_ / 2 + 30))"); done
    start_emu --idle-close 3s --live --fragment-bytes "$LIVE_FRAGMENT" "${streams[@]}"
    seq 0 $((n - 1)) | sed 's/^/live/' > "$work/$name.txt"
    rm -rf "$work/out" "$work/state"
    measure "$name" --streams-from "$work/$name.txt" --start earliest --duration "${SECONDS_}s" \
        -o "$work/out/{stream}.mkv" --state-dir "$work/state"
    # What each stream holds, while the emulator still serves it (a fragment later, so that
    # the last one written is listed).
    sleep 3
    mkdir -p "$work/$name.listed"
    for i in $(seq 0 $((n - 1))); do
        "$bin/kvs-dl" list --endpoint-url "http://127.0.0.1:$PORT" --stream-name "live$i" --json \
            > "$work/$name.listed/live$i"
        [[ -s $work/out/live$i.mkv ]] || { echo "bench: $name: no file for live$i" >&2; exit 1; }
    done
}

echo "bench: $LIVE live streams for ${SECONDS_} s" >&2
live "$LIVE" fleet
echo "bench: 1 live stream for ${SECONDS_} s (the base)" >&2
live 1 single

if (( ARCHIVED > 0 )); then
echo "bench: catching up $ARCHIVED archived streams, $ARCHIVE_MB MB in all, and one of $ARCHIVE_MB MB" >&2
per=$(( (ARCHIVE_MB * 1000000 / ARCHIVE_FRAGMENT + ARCHIVED - 1) / ARCHIVED ))
streams=(--stream "one=synthetic:$((per * ARCHIVED))")
for i in $(seq 0 $((ARCHIVED - 1))); do streams+=(--stream "arch$i=synthetic:$per"); done
start_emu --idle-close 200ms --fragment-bytes "$ARCHIVE_FRAGMENT" "${streams[@]}"
# The archive ends when the emulator starts: past a fragment and 2 s, a run ends at the last
# listed fragment without waiting for an idle GetMedia body to close.
sleep 5
seq 0 $((ARCHIVED - 1)) | sed 's/^/arch/' > "$work/archived.txt"
rm -rf "$work/out"
sync
measure catchup-one --stream-name one --start earliest --end now -o "$work/out/one.mkv"
rm -rf "$work/out"
sync
measure catchup-fleet --streams-from "$work/archived.txt" --start earliest --end now \
    -o "$work/out/{stream}.mkv"
fi

python3 - "$work" "$SECONDS_" "$LIVE" "$ARCHIVED" "$(nproc)" <<'EOF'
import collections, datetime, json, sys
work, seconds, live, archived, cores = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]

def times(name):
    wall, user, system, rss = open(f"{work}/{name}.time").read().split()
    return float(wall), float(user), float(system), int(rss) / 1024

def timing(name):
    wall, user, system, rss = times(name)
    return wall, user + system, rss

def events(name):
    return [json.loads(l) for l in open(f"{work}/{name}.jsonl") if l.startswith("{")]

def once(name, n):
    """Every stream's first seconds/2 fragments, each written once."""
    listed = {}
    for i in range(n):
        rows = [json.loads(l) for l in open(f"{work}/{name}.listed/live{i}")]
        listed[f"live{i}"] = [r["number"] for r in rows if r.get("kind") == "fragment"]
    got = collections.defaultdict(list)
    for e in events(name):
        if e.get("event") == "fragment":
            got[e["stream"]].append(e["number"])
    bad = []
    for i in range(n):
        s = f"live{i}"
        expected = listed[s][: seconds // 2]
        if len(expected) < seconds // 2 or sorted(got[s]) != expected:
            bad.append(f"{s}: wrote {len(got[s])} ({len(set(got[s]))} distinct), expected {len(expected)}")
    return bad

fw, fc, fr = timing("fleet")
sw, sc, sr = timing("single")
fleet_bad, single_bad = once("fleet", live), once("single", 1)
_, fu, fs, _ = times("fleet")
_, su, ss, _ = times("single")
if archived:
    ow, oc, orss = timing("catchup-one")
    cw, cc, crss = timing("catchup-fleet")
    one_done = next(e for e in events("catchup-one") if e.get("event") == "done")
    fleet_done = next(e for e in events("catchup-fleet") if e.get("event") == "done")
    one_bytes, fleet_bytes = one_done["bytes"], fleet_done["bytes"]
    ratio = (fleet_bytes / cw) / (one_bytes / ow)
cpu = fc / fw * 100
marginal_rss = (fr - sr) / max(live - 1, 1)

print(f"kvs-dl fleet benchmark, {datetime.date.today()}, {cores} cores; live: {seconds} s of media per stream, 2 s fragments of 250 kB (1 Mbit/s)")
print()
print("| run | streams | wall s | CPU s (user + sys) | CPU % of one core | peak RSS MB | every fragment once |")
print("|---|---:|---:|---:|---:|---:|---|")
print(f"| live, one process | {live} | {fw:.1f} | {fc:.2f} ({fu:.2f} + {fs:.2f}) | {cpu:.2f} | {fr:.1f} | {'yes' if not fleet_bad else 'NO'} ({live * seconds // 2} fragments) |")
print(f"| live, one stream (base) | 1 | {sw:.1f} | {sc:.2f} ({su:.2f} + {ss:.2f}) | {sc / sw * 100:.2f} | {sr:.1f} | {'yes' if not single_bad else 'NO'} |")
print()
if archived:
    print("| catching up `--start earliest --end now` | streams | MB | wall s | MB/s | CPU s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| one stream | 1 | {one_bytes / 1e6:.0f} | {ow:.2f} | {one_bytes / 1e6 / ow:.0f} | {oc:.2f} | {orss:.1f} |")
    print(f"| fleet, one process | {archived} | {fleet_bytes / 1e6:.0f} | {cw:.2f} | {fleet_bytes / 1e6 / cw:.0f} | {cc:.2f} | {crss:.1f} |")
    print(f"| fleet / one stream | | | | **{ratio:.2f}x** | | |")
    print()
print(f"Cost per live stream (1 Mbit/s): {fc / fw / live * 1000:.2f} CPU ms/s, {fr / live:.2f} MB RSS "
      f"(marginal over one stream: {marginal_rss:.2f} MB; one stream alone: {sr:.1f} MB).")
failures = []
if cpu >= 5: failures.append(f"CPU {cpu:.2f}% of one core (target < 5%)")
if fr >= 200: failures.append(f"peak RSS {fr:.1f} MB (target < 200 MB)")
if fleet_bad or single_bad: failures.append("fragments not written exactly once: " + "; ".join((fleet_bad + single_bad)[:5]))
if archived and fleet_done["fragments"] != one_done["fragments"]:
    failures.append(f"catch-up fragments differ: {fleet_done['fragments']} vs {one_done['fragments']}")
if archived and ratio < 0.8: failures.append(f"catch-up ratio {ratio:.2f} (target >= 0.8)")
for f in failures:
    print(f"MISSED: {f}")
sys.exit(1 if failures else 0)
EOF
