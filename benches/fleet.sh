#!/usr/bin/env bash
# Fleet mode against memory mode, over HTTP: the `server` example alone
# (limits in memory) and with --redis (leased buckets), ROUNDS interleaved
# rounds in one run, wrk on GET /api/me with one cached key and the per-user
# limit raised out of the way. Prints req/s, p50 and p99 per mode (medians
# over the rounds), the ratios of --redis to memory, and the Redis commands
# per allowed request (INFO commandstats of a redis-server this script
# starts on its own port, over the --redis rounds).
#
#   ROUNDS=3 DURATION=4s benches/fleet.sh
#
# PROFILE=dev runs an unoptimised build (to check the script, not to measure).
#
# Needs wrk and redis-server (Debian: apt-get install wrk redis-server).
# wrk, Redis and the server share the machine's cores: compare within one
# run only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4s}
ADDR=127.0.0.1:3901
REDIS_PORT=${REDIS_PORT:-6391}
PROFILE=${PROFILE:-release}
cargo build --profile "$PROFILE" --example server --features sqlite,postgres,redis,ui >&2
DIR=$PROFILE
if [ "$PROFILE" = dev ]; then DIR=debug; fi
BIN=${CARGO_TARGET_DIR:-target}/$DIR/examples/server
TMP=$(mktemp -d)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$TMP" >/dev/null &
REDIS_PID=$!
trap 'kill "$REDIS_PID" 2>/dev/null; rm -rf "$TMP"' EXIT
until redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; do sleep 0.1; done
DB="$TMP/keys.db"
TOKEN=$("$BIN" issue --user alice --scope nodes:read --db "$DB")
# Total successful Redis commands so far (failed EVALSHA of unloaded scripts excluded).
redis_calls() {
    redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | awk -F'[:,=]' '
        /^cmdstat_/ && $1 != "cmdstat_info" && $1 != "cmdstat_config|resetstat" {
            for (i = 2; i < NF; i += 2) { if ($i == "calls") c = $(i+1); if ($i == "failed_calls") f = $(i+1) }
            total += c - f
        } END { print total + 0 }'
}
for ((round = 0; round < ROUNDS; round++)); do
    modes=(memory redis)
    if ((round % 2)); then modes=(redis memory); fi
    for mode in "${modes[@]}"; do
        extra=()
        if [ "$mode" = redis ]; then extra=(--redis "redis://127.0.0.1:$REDIS_PORT/"); fi
        "$BIN" serve --addr "$ADDR" --db "$DB" --rate-limit 4000000000 "${extra[@]}" >/dev/null 2>&1 &
        pid=$!
        until curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/me" 2>/dev/null; do sleep 0.1; done
        # Warm: the key in the verifier's cache, the first leases.
        wrk -t1 -c32 -d1s -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/me" >/dev/null
        before=$(redis_calls)
        out=$(wrk -t1 -c32 "-d$DURATION" --latency -H "Authorization: Bearer $TOKEN" "http://$ADDR/api/me")
        after=$(redis_calls)
        kill "$pid"; wait "$pid" 2>/dev/null || true
        non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
        if [ -n "$non2xx" ]; then echo "$mode: $non2xx non-2xx answers" >&2; exit 1; fi
        reqs=$(awk '/requests in/ {print $1}' <<<"$out")
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$rps" "$p50" "$p99" "$reqs" "$((after - before))" >> "$TMP/results"
    done
done
python3 - "$TMP/results" <<'PY'
import re, statistics, sys
def us(v):
    m = re.match(r'([\d.]+)(us|ms|s)', v)
    return float(m.group(1)) * {'us': 1, 'ms': 1e3, 's': 1e6}[m.group(2)]
rows = {}
for line in open(sys.argv[1]):
    mode, rps, p50, p99, reqs, calls = line.rstrip('\n').split('\t')
    rows.setdefault(mode, []).append((float(rps), us(p50), us(p99), int(reqs), int(calls)))
med = lambda m, i: statistics.median(r[i] for r in rows[m])
print('| mode | req/s (median) | spread | p50 µs | p99 µs | Redis commands per allowed request |')
print('|---|---:|---:|---:|---:|---:|')
for mode in ('memory', 'redis'):
    v = rows[mode]
    per = sum(r[4] for r in v) / sum(r[3] for r in v)
    print(f'| {mode} | {med(mode, 0):,.0f} | {min(r[0] for r in v):,.0f}-{max(r[0] for r in v):,.0f} '
          f'| {med(mode, 1):.0f} | {med(mode, 2):.0f} | {per:.4f} |')
print()
print(f"--redis / memory: req/s {med('redis', 0) / med('memory', 0):.2f}x, "
      f"p50 {med('redis', 1) / med('memory', 1):.2f}x, p99 {med('redis', 2) / med('memory', 2):.2f}x")
PY
