#!/usr/bin/env bash
# Soak and faults: two `server` instances on one PostgreSQL ($DATABASE_URL,
# a schema of their own, reached through a TCP relay the harness cuts) and
# one Redis of their own (a free port; restarted as a fault), under steady
# load, with a SIGKILL, a Redis restart, a 5 s PostgreSQL cut and a
# revocation; then a report, and asserts (see benches/soak.py).
#
#   benches/soak.sh                 # the short form, 60 s, release build
#   DURATION=600 benches/soak.sh    # the long form
#   PROFILE=debug benches/soak.sh   # the debug build (what .ci/run uses)
#
# PROFILE=debug builds the server as `cargo test --workspace --all-features`
# does (same features, same profile settings), so after that command it
# only links the example. The asserts count requests, rows and credits,
# not speed, so they hold for either build.
#
# Needs python3, psql, redis-server and a PostgreSQL at $DATABASE_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-60}
CONNECTIONS=${CONNECTIONS:-8}
PROFILE=${PROFILE:-release}
: "${DATABASE_URL:=postgres://postgres@127.0.0.1:5432/test}"
export DATABASE_URL
case "$PROFILE" in
release) cargo build -q --release --example server ;;
debug) cargo build -q --workspace --all-features --example server ;;
*)
    echo "PROFILE must be release or debug, not $PROFILE" >&2
    exit 2
    ;;
esac
exec python3 benches/soak.py --server "${CARGO_TARGET_DIR:-target}/$PROFILE/examples/server" \
    --duration "$DURATION" --connections "$CONNECTIONS"
