#!/usr/bin/env bash
# The audit log at the server's own full speed: starts the `server` example
# on a fresh store, runs wrk on GET /api/me with the admin key (cached after
# the first request), then reads the audit counters from /metrics.
#
#   benches/audit/load.sh sqlite            # a fresh SQLite file
#   benches/audit/load.sh postgres          # a fresh schema of $DATABASE_URL
#   DURATION=60s CONNECTIONS=32 benches/audit/load.sh sqlite
#   FLOOD=1 benches/audit/load.sh sqlite    # garbage from rotating addresses
#                                           # beside a valid client
#
# Prints requests, served, req/s, written, dropped, the store's growth and
# the server's peak RSS. Needs wrk (apt-get install wrk).
set -euo pipefail
cd "$(dirname "$0")/../.."
BACKEND=${1:-sqlite}
DURATION=${DURATION:-60s}
CONNECTIONS=${CONNECTIONS:-32}
PORT=${PORT:-3917}
# /metrics is served only on a listener of its own.
METRICS_PORT=${METRICS_PORT:-$((PORT + 1))}
TMP=$(mktemp -d)
SERVER_PID=
SCHEMA=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    [ -n "$SCHEMA" ] && psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $SCHEMA CASCADE" >/dev/null 2>&1
    rm -rf "$TMP"
}
trap cleanup EXIT

[ -n "${SERVER_BIN:-}" ] || cargo build -q --release --example server
BIN=${SERVER_BIN:-${CARGO_TARGET_DIR:-target}/release/examples/server}
case "$BACKEND" in
    sqlite) DB="$TMP/data/keys.db" ;;
    postgres)
        SCHEMA="audit_load_$$"
        psql -q "$DATABASE_URL" -c "CREATE SCHEMA $SCHEMA" >/dev/null
        sep='?'; case "$DATABASE_URL" in *\?*) sep='&' ;; esac
        DB="${DATABASE_URL}${sep}options=-c%20search_path%3D${SCHEMA}" ;;
    *) echo "backend: sqlite or postgres" >&2; exit 2 ;;
esac
store_bytes() {
    if [ "$BACKEND" = sqlite ]; then
        du -cb "$TMP"/data/keys.db* 2>/dev/null | tail -1 | cut -f1
    else
        psql -Atq "$DATABASE_URL" -c "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = '$SCHEMA' AND c.relkind IN ('r', 'm')"
    fi
}
metric() { # name [label filter]
    curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | { grep "^$1" || true; } | { grep -- "${2:-}" || true; } |
        awk '{s += $2} END {printf "%d\n", s}'
}

ARGS=(--addr "127.0.0.1:$PORT" --metrics-addr "127.0.0.1:$METRICS_PORT" --db "$DB" --rate-limit 4000000000)
[ -n "${FLOOD:-}" ] && ARGS+=(--trusted-proxy 127.0.0.1/32)
"$BIN" "${ARGS[@]}" >"$TMP/out" 2>"$TMP/err" &
SERVER_PID=$!
for _ in $(seq 1 200); do
    grep -q '^    st_' "$TMP/out" 2>/dev/null && curl -sf "http://127.0.0.1:$PORT/health/ready" >/dev/null && break
    sleep 0.1
done
TOKEN=$(grep -m1 '^    st_' "$TMP/out" | tr -d ' ')
[ -n "$TOKEN" ] || { cat "$TMP/err" >&2; echo "no admin token" >&2; exit 1; }
curl -sf -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/me" >/dev/null
sleep 1
BEFORE=$(store_bytes)
RSS_PEAK=0
( while kill -0 "$SERVER_PID" 2>/dev/null; do
      awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null; sleep 1
  done ) >"$TMP/rss" &
RSS_WATCH=$!

if [ -n "${FLOOD:-}" ]; then
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s benches/audit/flood.lua "http://127.0.0.1:$PORT/api/me" >"$TMP/flood" &
    FLOOD_PID=$!
    wrk -t1 -c2 -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/me" >"$TMP/valid"
    wait "$FLOOD_PID"
    echo "--- flood"; cat "$TMP/flood"
    echo "--- valid client"; cat "$TMP/valid"
else
    wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$PORT/api/me" >"$TMP/valid"
    cat "$TMP/valid"
fi
kill "$RSS_WATCH" 2>/dev/null || true
# Everything accepted is written within a batch's linger; wait for the
# counter to stop moving.
prev=-1
for _ in $(seq 1 100); do
    w=$(metric keygate_audit_events_written_total)
    [ "$w" = "$prev" ] && break
    prev=$w; sleep 0.5
done
requests() { grep -Eo '^ *[0-9]+ requests in' "$1" | awk '{print $1}'; }
non2xx() { grep -Eo 'Non-2xx or 3xx responses: [0-9]+' "$1" | awk '{print $NF}' || true; }
VALID_REQ=$(requests "$TMP/valid")
VALID_BAD=$(non2xx "$TMP/valid"); VALID_BAD=${VALID_BAD:-0}
SERVED=$((VALID_REQ - VALID_BAD + 1)) # + the warm-up request
WRITTEN=$(metric keygate_audit_events_written_total)
DROPPED=$(metric keygate_audit_events_dropped_total)
AFTER=$(store_bytes)
RSS_PEAK=$(sort -n "$TMP/rss" | tail -1)
echo "--- $BACKEND, $DURATION, $CONNECTIONS connections"
echo "valid requests served: $SERVED (non-2xx: $VALID_BAD)"
grep -E 'Requests/sec' "$TMP/valid" | sed 's/^/valid /'
[ -n "${FLOOD:-}" ] && { echo "flood requests: $(requests "$TMP/flood")"; grep -E 'Requests/sec' "$TMP/flood" | sed 's/^/flood /'; grep -E '^ +99%' "$TMP/valid" | sed 's/^ */valid p99 /'; }
echo "audit written: $WRITTEN"
echo "audit dropped: $DROPPED"
echo "store growth: $(( (AFTER - BEFORE) / 1024 )) KiB ($BEFORE -> $AFTER bytes)"
echo "server peak RSS: $((RSS_PEAK / 1024)) MiB"
Q_ROWS="SELECT outcome, coalesce(reason, '-'), coalesce(status, 0), count(*) FROM audit_events GROUP BY 1, 2, 3 ORDER BY 4 DESC"
Q_REFUSALS="SELECT reason, count(*), sum(count) FROM audit_refusals GROUP BY 1"
if [ "$BACKEND" = sqlite ]; then
    echo "event rows (outcome|reason|status|rows):"; sqlite3 "$DB" "$Q_ROWS"
    echo "refusal windows (reason|rows|count):"; sqlite3 "$DB" "$Q_REFUSALS"
    echo "bytes of the counted refusals (audit_refusals): $(sqlite3 "$DB" "SELECT sum(pgsize) FROM dbstat WHERE name = 'audit_refusals'")"
else
    echo "event rows (outcome|reason|status|rows):"; psql -Atq "$DB" -c "$Q_ROWS"
    echo "refusal windows (reason|rows|count):"; psql -Atq "$DB" -c "$Q_REFUSALS"
    echo "bytes of the counted refusals (audit_refusals): $(psql -Atq "$DB" -c "SELECT pg_total_relation_size('audit_refusals')")"
fi
