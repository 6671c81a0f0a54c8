#!/usr/bin/env bash
# Soak and faults: two `server` instances on one PostgreSQL ($DATABASE_URL,
# a schema of their own, reached through a TCP relay the harness cuts) and
# one Redis of their own (a free port; restarted as a fault), under steady
# load, with a SIGKILL, a Redis restart, a 5 s PostgreSQL cut and a
# revocation; then a report, and asserts (see benches/soak.py).
#
#   benches/soak.sh                 # the short form, 60 s (CI)
#   DURATION=600 benches/soak.sh    # the long form
#
# Needs python3, psql, redis-server and a PostgreSQL at $DATABASE_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60}
CONNECTIONS=${CONNECTIONS:-8}
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/test}"
export DATABASE_URL
cargo build -q --release --example server
exec python3 benches/soak.py --server "${CARGO_TARGET_DIR:-target}/release/examples/server" \
    --duration "$DURATION" --connections "$CONNECTIONS"
