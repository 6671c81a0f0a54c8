#!/usr/bin/env bash
# Instructions per request of each stack of benches/stacks.rs, counted by
# callgrind: the same figures on every run of the same binary, whatever else
# the machine is doing, so two builds compare without the timing noise of a
# shared machine (which is where the ns figures of benches/stacks.rs swing).
#
#   benches/callgrind.sh                 # every stack
#   ITERS=20000 CONNECT_INFO=1 benches/callgrind.sh "AuthLayer, cached key"
#   ARGS=metrics=prometheus benches/callgrind.sh   # with a metrics recorder
#
# Only the request loop (`stacks::run`) is counted: not the set-up, not the
# first request, not governor's clock calibration. Each stack runs in its
# own process beside the bare router (the bench always keeps it), so a
# stack's own count is its run minus a bare-only run, and its added count
# is that minus the bare router's. Instructions are not time (a cache miss
# or a contended atomic counts as one), so this complements the ns table;
# it does not replace it.
#
# Needs valgrind (Debian: apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
ITERS=${ITERS:-20000}
CONNECT_INFO=${CONNECT_INFO:-1}
# More arguments for the bench binary, split on spaces (e.g. metrics=prometheus).
read -r -a EXTRA <<<"${ARGS:-}"
BIN=$(cargo bench -p keygate-benches --bench stacks --no-run 2>&1 | grep -o '(/[^)]*stacks-[0-9a-f]*)' | tr -d '()' | tail -1)
if [ "$#" -gt 0 ]; then
    STACKS=("$@")
else
    STACKS=("empty layer (identity)" "tower-http bearer" "bearer + user id insert"
        "tower_governor by key" "bearer + tower_governor" "bearer + user id + tower_governor"
        "floor: keyed digest + map read + identity"
        "AuthLayer, cached key" "AuthLayer, cached key, audit sink"
        "AuthLayer + RateLimitLayer per user")
fi
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# Instructions counted in the request loop with `stack=$1` kept (and the
# bare router); an unknown name keeps the bare router alone.
count() {
    valgrind --tool=callgrind --toggle-collect='stacks::run' \
        --callgrind-out-file="$TMP/out" "$BIN" rounds=1 "iters=$ITERS" threads=1 \
        "stack=$1" "only=$1" "connect_info=$CONNECT_INFO" ${EXTRA[@]+"${EXTRA[@]}"} >/dev/null 2>"$TMP/log" ||
        { cat "$TMP/log" >&2; exit 1; }
    awk '/^(summary|totals):/ {print $2; exit}' "$TMP/out"
}

bare=$(count "(bare router only)")
if [ "${bare:-0}" -eq 0 ]; then
    echo "callgrind counted nothing: is stacks::run still a symbol of $BIN?" >&2
    exit 1
fi
for name in "${STACKS[@]}"; do
    total=$(count "$name")
    # Not one instruction per request more than the bare router alone: only
    # it ran, so no stack has that name.
    if [ $((total - bare)) -lt "$ITERS" ]; then echo "no stack named \"$name\" in benches/stacks.rs" >&2; exit 1; fi
    printf '%s\t%s\n' "$name" "$total" >>"$TMP/results"
done
python3 - "$TMP/results" "$bare" "$ITERS" <<'PY'
import sys
iters = int(sys.argv[3])
bare = int(sys.argv[2]) / iters
added = {}
for line in open(sys.argv[1]):
    name, total = line.rstrip('\n').split('\t')
    # The run holds the bare router and the stack: the stack's own count is
    # the run's minus a bare-only run's, its added count that minus bare.
    added[name] = int(total) / iters - 2 * bare
def ratio(name, peer):
    return f'{added[name] / added[peer]:.2f}x' if added.get(peer) else '-'
print(f'bare router: {bare:,.0f} instructions per request ({iters} requests)')
print('| stack | added instructions | / bearer | / bearer + governor '
      '| / bearer + user id | / bearer + user id + governor |')
print('|---|---:|---:|---:|---:|---:|')
for name, a in added.items():
    print(f'| {name} | {a:+,.0f} | {ratio(name, "tower-http bearer")} '
          f'| {ratio(name, "bearer + tower_governor")} | {ratio(name, "bearer + user id insert")} '
          f'| {ratio(name, "bearer + user id + tower_governor")} |')
PY
