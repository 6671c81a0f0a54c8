#!/usr/bin/env python3
"""Soak and faults: two `server` instances on one PostgreSQL and one Redis
under steady load, while faults are injected; then a report, and asserts.

Run it through benches/soak.sh, which builds the server and passes its path.

Set-up: a Redis of its own (a free port, restarted as a fault), a schema
of its own in $DATABASE_URL reached through a TCP relay that the harness
can cut, two instances A and B (`--redis`, `--rate-limit` high enough never
to refuse), keys made through A's key API: load keys, one key to revoke,
one key with credits.

Faults, at fixed fractions of the run:
  15 %  SIGKILL B, restart it at once;
  30 %  restart Redis (stop it, start it again on the same port);
  45 %  cut PostgreSQL for 5 s (every relayed connection closed, new ones
        refused), then restore it;
  75 %  revoke the revocation key through A's key API.

Asserts, after a graceful stop of both instances (their audit queues are
flushed):
  - no request with the revoked key started later than REVOCATION_BOUND
    after its revocation returned was served;
  - audit rows of served requests = served requests, except events B had
    accepted but not written when it was killed: those are reported as a
    count, and must be at most what B served in the SIGKILL_WINDOW before
    the kill; and rows of requests whose answer a fault cut off before the
    client read it (at most the count of connection errors);
  - the credit key was served at most its credits;
  - after each fault, each instance answers /health/ready 200 within
    READY_BOUND;
  - no audit event was dropped (keygate_audit_events_dropped_total 0 on
    both instances at the end).
"""

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

REVOCATION_BOUND = 1.0  # s after DELETE returned: other instances have the change
SIGKILL_WINDOW = 1.0  # s before a SIGKILL whose accepted events may be unwritten
READY_BOUND = 15.0  # s after a fault is over until /health/ready answers 200
PG_CUT = 5.0  # s
CREDITS = 300


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """A TCP relay to PostgreSQL that can be cut (runs in its own thread)."""

    def __init__(self, target_host, target_port):
        self.target = (target_host, target_port)
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.open = True
        self.writers = set()
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        started.wait()

    def _run(self, started):
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", self.port)
        )
        started.set()
        self.loop.run_forever()
        server.close()

    async def _client(self, reader, writer):
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers.update([writer, up_writer])

        async def pipe(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self.writers.difference_update([writer, up_writer])

    def cut(self):
        def do():
            self.open = False
            for w in list(self.writers):
                w.transport.abort()
            self.writers.clear()

        self.loop.call_soon_threadsafe(do)

    def restore(self):
        self.loop.call_soon_threadsafe(lambda: setattr(self, "open", True))


def http(port, method, path, token=None, body=None, timeout=5):
    """One request on a fresh connection: (status, body bytes)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        conn.request(method, path, body=json.dumps(body) if body else None, headers=headers)
        res = conn.getresponse()
        return res.status, res.read()
    except OSError:
        return 0, b""
    finally:
        conn.close()


def metric(port, name):
    status, body = http(port, "GET", "/metrics")
    if status != 200:
        return None
    total = 0
    for line in body.decode().splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class Instance:
    def __init__(self, name, binary, db, redis, log_dir):
        self.name, self.binary, self.db, self.redis = name, binary, db, redis
        self.port = free_port()
        # /metrics is served only on a listener of its own.
        self.metrics_port = free_port()
        self.log_dir = log_dir
        self.proc = None
        self.runs = 0

    def start(self):
        self.runs += 1
        out = open(os.path.join(self.log_dir, f"{self.name}{self.runs}.out"), "w")
        err = open(os.path.join(self.log_dir, f"{self.name}{self.runs}.err"), "w")
        self.out_path = out.name
        self.proc = subprocess.Popen(
            [self.binary, "--addr", f"127.0.0.1:{self.port}", "--db", self.db,
             "--redis", self.redis, "--rate-limit", "4000000000",
             "--metrics-addr", f"127.0.0.1:{self.metrics_port}"],
            stdout=out, stderr=err, stdin=subprocess.DEVNULL,
        )

    def ready_within(self, bound):
        """Seconds until /health/ready answers 200, or None past `bound`."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < bound:
            if http(self.port, "GET", "/health/ready", timeout=1)[0] == 200:
                return time.monotonic() - t0
            time.sleep(0.05)
        return None

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Load:
    """Steady load: `connections` keep-alive clients, each sending GET
    /api/me to A and B in turn, with the keys in turn. Every request is
    recorded: (start, end, instance, key label, status); status 0 is a
    connection error."""

    def __init__(self, instances, keys, connections):
        self.instances, self.keys, self.connections = instances, keys, connections
        self.records = []
        self.stop = False

    async def client(self, n):
        conns = {}
        i = n
        while not self.stop:
            inst = self.instances[i % len(self.instances)]
            label, token = self.keys[(i // len(self.instances)) % len(self.keys)]
            i += 1
            t0 = time.monotonic()
            status = 0
            try:
                if inst.name not in conns:
                    conns[inst.name] = await asyncio.wait_for(
                        asyncio.open_connection("127.0.0.1", inst.port), 2)
                reader, writer = conns[inst.name]
                writer.write((f"GET /api/me HTTP/1.1\r\nHost: soak\r\n"
                              f"Authorization: Bearer {token}\r\n\r\n").encode())
                await writer.drain()
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                answered = int(head.split(b" ", 2)[1])
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                status = answered  # the server answered, whatever befalls the body
                if length:
                    await asyncio.wait_for(reader.readexactly(length), 10)
            except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError,
                    asyncio.LimitOverrunError):
                status = 0
                conn = conns.pop(inst.name, None)
                if conn:
                    conn[1].close()
                await asyncio.sleep(0.02)
            self.records.append((t0, time.monotonic(), inst.name, label, status))

    async def run(self):
        await asyncio.gather(*(self.client(n) for n in range(self.connections)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", required=True)
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()
    database_url = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/test")
    log_dir = tempfile.mkdtemp(prefix="keygate-soak-")
    url = urllib.parse.urlsplit(database_url)
    schema = f"soak_{os.getpid()}"
    subprocess.run(["psql", "-q", database_url, "-c", f"CREATE SCHEMA {schema}"], check=True)
    relay = Relay(url.hostname or "127.0.0.1", url.port or 5432)
    query = "options=" + urllib.parse.quote(f"-c search_path={schema}", safe="")
    netloc = (url.username + "@" if url.username else "") + f"127.0.0.1:{relay.port}"
    relayed = urllib.parse.urlunsplit((url.scheme, netloc, url.path, query, ""))
    direct = urllib.parse.urlunsplit((url.scheme, url.netloc, url.path, query, ""))
    redis_port = free_port()
    redis_cmd = ["redis-server", "--port", str(redis_port), "--save", "", "--appendonly", "no",
                 "--bind", "127.0.0.1"]
    redis = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis_url = f"redis://127.0.0.1:{redis_port}/"
    a = Instance("A", args.server, relayed, redis_url, log_dir)
    b = Instance("B", args.server, relayed, redis_url, log_dir)
    failures = []
    report = {"log_dir": log_dir}
    try:
        time.sleep(0.3)
        a.start()
        if a.ready_within(60) is None:
            sys.exit(f"A never became ready; see {log_dir}")
        token = None
        for line in open(a.out_path):
            if line.strip().startswith("st_"):
                token = line.strip()
        assert token, "no admin token printed"
        b.start()
        if b.ready_within(60) is None:
            sys.exit(f"B never became ready; see {log_dir}")

        def make_key(name, **policy):
            status, body = http(a.port, "POST", "/api/tokens", token, {"name": name, **policy})
            assert status == 201, (status, body)
            created = json.loads(body)
            return created["id"], created["token"]

        keys = [(f"load{i}", make_key(f"load{i}")[1]) for i in range(4)]
        revoked_id, revoked_token = make_key("revoked")
        credit_id, credit_token = make_key("credits", remaining=CREDITS)
        keys += [("revoked", revoked_token), ("credits", credit_token)]

        load = Load([a, b], keys, args.connections)
        loop = asyncio.new_event_loop()
        load_thread = threading.Thread(target=loop.run_until_complete, args=(load.run(),))
        t_start = time.monotonic()
        load_thread.start()
        events = {}
        ready = {}

        def at(fraction):
            time.sleep(max(0.0, t_start + fraction * args.duration - time.monotonic()))

        at(0.15)
        events["sigkill"] = time.monotonic()
        b.kill()
        b.start()
        ready["B after SIGKILL"] = b.ready_within(READY_BOUND)

        at(0.30)
        redis.terminate()
        redis.wait()
        redis = subprocess.Popen(redis_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        events["redis_restarted"] = time.monotonic()
        ready["A after Redis restart"] = a.ready_within(READY_BOUND)
        ready["B after Redis restart"] = b.ready_within(READY_BOUND)

        at(0.45)
        events["pg_cut"] = time.monotonic()
        relay.cut()
        time.sleep(PG_CUT)
        relay.restore()
        events["pg_restored"] = time.monotonic()
        ready["A after PostgreSQL cut"] = a.ready_within(READY_BOUND)
        ready["B after PostgreSQL cut"] = b.ready_within(READY_BOUND)

        at(0.75)
        status, _ = http(a.port, "DELETE", f"/api/tokens/{revoked_id}", token)
        events["revoked"] = time.monotonic()
        if status not in (200, 204):
            failures.append(f"revocation answered {status}")

        at(1.0)
        load.stop = True
        load_thread.join()
        elapsed = time.monotonic() - t_start
        dropped = {i.name: metric(i.metrics_port, "keygate_audit_events_dropped_total") for i in (a, b)}
        a.stop()
        b.stop()

        records = load.records
        by_cause = {}
        for (_, _, inst, label, status) in records:
            cause = {0: "connection error", 200: "served"}.get(status, f"refused {status}")
            by_cause.setdefault(cause, 0)
            by_cause[cause] += 1
        served = [r for r in records if r[4] == 200]
        report["duration_s"] = round(elapsed, 1)
        report["requests"] = len(records)
        report["requests_per_s"] = round(len(records) / elapsed)
        report["by_cause"] = by_cause
        for inst in ("A", "B"):
            report[f"served_by_{inst}"] = sum(1 for r in served if r[2] == inst)
            # The counts below mean nothing if an instance served nothing.
            if report[f"served_by_{inst}"] == 0:
                failures.append(f"{inst} served no request")

        # Revocation.
        late = [r for r in served if r[3] == "revoked" and r[0] > events["revoked"] + REVOCATION_BOUND]
        report["revoked_key_served_after_bound"] = len(late)
        report["revoked_key_served_before"] = sum(
            1 for r in served if r[3] == "revoked" and r[0] <= events["revoked"])
        if late:
            failures.append(f"{len(late)} requests served with the revoked key after the bound")
        if report["revoked_key_served_before"] == 0:
            failures.append("the revoked key was never served before its revocation")

        # Audit rows of served requests.
        out = subprocess.run(
            ["psql", "-Atq", direct, "-c",
             "SELECT count(*) FROM audit_events WHERE path = '/api/me' AND status = 200"],
            check=True, capture_output=True, text=True)
        rows = int(out.stdout.strip())
        window = sum(1 for r in served if r[2] == "B"
                     and events["sigkill"] - SIGKILL_WINDOW <= r[1] <= events["sigkill"])
        missing = len(served) - rows
        report["audit_rows_served"] = rows
        report["audit_missing"] = missing
        report["served_by_B_in_sigkill_window"] = window
        # A request whose answer never reached the client (a connection cut
        # by a fault) may have been served and recorded: at most that many
        # rows more than served requests.
        unknown = by_cause.get("connection error", 0)
        report["requests_with_unknown_outcome"] = unknown
        if -missing > unknown:
            failures.append(f"{-missing} more audit rows than served requests; "
                            f"only {unknown} requests had an unknown outcome")
        if missing > window:
            failures.append(f"{missing} served requests without an audit row; the SIGKILL window "
                            f"explains at most {window}")
        report["audit_dropped_total"] = dropped
        if any(d != 0 for d in dropped.values()):
            failures.append(f"audit events dropped: {dropped}")

        # Credits.
        credit_served = sum(1 for r in served if r[3] == "credits")
        out = subprocess.run(
            ["psql", "-Atq", direct, "-c",
             f"SELECT credits_remaining FROM api_keys WHERE id = '{credit_id}'"],
            check=True, capture_output=True, text=True)
        credit_times = [r[0] for r in served if r[3] == "credits"]
        report["credits"] = {
            "granted": CREDITS, "served": credit_served,
            "served_before_redis_restart": sum(1 for t in credit_times if t < events["redis_restarted"]),
            "served_by": {i: sum(1 for r in served if r[3] == "credits" and r[2] == i) for i in "AB"},
            "remaining_in_store": out.stdout.strip(),
        }
        if credit_served > CREDITS:
            failures.append(f"credits overspent: {credit_served} served of {CREDITS}")
        remaining = out.stdout.strip()
        if not remaining.lstrip("-").isdigit() or int(remaining) < 0:
            failures.append(f"credits remaining in the store: {remaining!r}")

        report["ready_s"] = {k: (round(v, 2) if v is not None else None) for k, v in ready.items()}
        for k, v in ready.items():
            if v is None:
                failures.append(f"{k}: not ready within {READY_BOUND} s")
    finally:
        for inst in (a, b):
            if inst.proc and inst.proc.poll() is None:
                inst.proc.kill()
        redis.kill()
        subprocess.run(["psql", "-q", database_url, "-c", f"DROP SCHEMA IF EXISTS {schema} CASCADE"],
                       capture_output=True)
    report["bounds_s"] = {"revocation": REVOCATION_BOUND, "sigkill_window": SIGKILL_WINDOW,
                          "ready": READY_BOUND, "postgres_cut": PG_CUT}
    print(json.dumps(report, indent=2))
    if failures:
        print("FAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("soak: every assertion held")


if __name__ == "__main__":
    main()
