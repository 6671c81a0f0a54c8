#!/usr/bin/env bash
# Idle authenticated WebSockets at scale (benches/websockets.rs): server
# memory per idle connection and the close p99 after the credential ends,
# for N connections (default 10,000) from many loopback addresses.
#
#   CONNECTIONS=10000 SCENARIOS=revoke,disable,expire,regenerate,axum-defaults benches/websockets.sh
#
# The driver and the server each hold one descriptor per connection: the
# file limit is raised to the hard limit first.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n "$(ulimit -Hn)"
CONNECTIONS=${CONNECTIONS:-10000}
SCENARIOS=${SCENARIOS:-revoke,disable,expire,regenerate,axum-defaults}
if (( $(ulimit -n) < CONNECTIONS + 100 )); then
    echo "the file limit ($(ulimit -n)) is too low for $CONNECTIONS connections" >&2
    exit 1
fi
cargo bench -p keygate-benches --bench websockets -- "connections=$CONNECTIONS" "scenarios=$SCENARIOS"
