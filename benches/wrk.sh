#!/usr/bin/env bash
# Requests per second and p50 latency over HTTP: wrk against each stack of
# benches/stacks.rs, served by a fresh process each time (2 tokio workers),
# ROUNDS interleaved rounds (rotating the start), medians per stack.
#
#   ROUNDS=5 DURATION=5s benches/wrk.sh
#
# Needs wrk (Debian: apt-get install wrk). wrk and the server share the
# machine's cores, so compare stacks within one run only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
ADDR=127.0.0.1:3900
BIN=$(cargo bench -p keygate-benches --bench stacks --no-run 2>&1 | grep -o '(/[^)]*stacks-[0-9a-f]*)' | tr -d '()' | tail -1)
STACKS=("bare router" "tower-http bearer" "bearer + tower_governor" "bearer + user id insert"
    "bearer + user id + tower_governor" "AuthLayer, cached key" "AuthLayer + RateLimitLayer per user")
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for ((round = 0; round < ROUNDS; round++)); do
    for ((k = 0; k < ${#STACKS[@]}; k++)); do
        i=$(( (k + round) % ${#STACKS[@]} ))
        name=${STACKS[$i]}
        "$BIN" "serve=$name" "addr=$ADDR" "token_file=$TMP/token" &
        pid=$!
        until curl -s -o /dev/null "http://$ADDR/" 2>/dev/null; do sleep 0.1; done
        out=$(wrk -t2 -c64 "-d$DURATION" --latency -H "Authorization: Bearer $(cat "$TMP/token")" "http://$ADDR/")
        kill "$pid"; wait "$pid" 2>/dev/null || true
        rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
        p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
        non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
        if [ -n "$non2xx" ]; then echo "$name: $non2xx non-2xx answers" >&2; exit 1; fi
        printf '%s\t%s\t%s\n' "$name" "$rps" "$p50" >> "$TMP/results"
    done
done
python3 - "$TMP/results" <<'PY'
import re, statistics, sys
def us(v):
    m = re.match(r'([\d.]+)(us|ms|s)', v)
    return float(m.group(1)) * {'us': 1, 'ms': 1e3, 's': 1e6}[m.group(2)]
rows = {}
for line in open(sys.argv[1]):
    name, rps, p50 = line.rstrip('\n').split('\t')
    rows.setdefault(name, []).append((float(rps), us(p50)))
bare = rows['bare router']
b_rps = statistics.median(r for r, _ in bare)
b_p50 = statistics.median(p for _, p in bare)
print('| stack | req/s (median) | spread | vs bare | p50 µs | p50 vs bare |')
print('|---|---:|---:|---:|---:|---:|')
for name, v in rows.items():
    rps = [r for r, _ in v]
    p50 = statistics.median(p for _, p in v)
    m = statistics.median(rps)
    print(f'| {name} | {m:,.0f} | {min(rps):,.0f}-{max(rps):,.0f} | {m / b_rps:.3f} | {p50:.0f} | {p50 / b_p50:.2f} |')
PY
