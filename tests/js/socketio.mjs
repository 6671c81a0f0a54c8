// Connects to the demo server's Socket.IO endpoint with the real client, as
// the demo's clients do, and prints one JSON line saying what happened.
//
//   node tests/js/socketio.mjs <url> <token> [scenario] [count]
//
// <token> "-" sends none. Scenarios:
//   payload   (default) auth: { api_token }; asks `whoami`
//   header    the token in `Authorization: Bearer`
//   protocol  the token in `Sec-WebSocket-Protocol: Bearer, <token>`
//   flood     sends <count> `echo` events at once; counts echoes and `rate_limited`
//   connects  <count> connects one after the other; reports each outcome
//   revoked   connects, prints {"connected":true}, then waits to be disconnected
//             (the test revokes the key meanwhile); reports the `revoked` event
//
// Every wait has a deadline, and the script always exits.
import { io } from "socket.io-client";

const [url, token, scenario = "payload", countArg = "5"] = process.argv.slice(2);
const count = Number.parseInt(countArg, 10);
const DEADLINE_MS = 10_000;

function options(how) {
  const opts = {
    path: "/ext-socket.io",
    transports: ["websocket"],
    reconnection: false,
    timeout: DEADLINE_MS,
    forceNew: true,
  };
  if (token === "-") return opts;
  if (how === "header") opts.extraHeaders = { Authorization: `Bearer ${token}` };
  else if (how === "protocol") opts.extraHeaders = { "Sec-WebSocket-Protocol": `Bearer, ${token}` };
  else opts.auth = { api_token: token };
  return opts;
}

/** Resolves with the connected socket, or rejects with the connect_error. */
function connect(how) {
  return new Promise((resolve, reject) => {
    const socket = io(url, options(how));
    socket.once("connect", () => resolve(socket));
    socket.once("connect_error", (err) => {
      socket.close();
      reject(err);
    });
  });
}

/** The connect_error as the server sent it: its message is the JSON error body. */
function refusal(err) {
  let body = null;
  try {
    body = JSON.parse(err.message);
  } catch {
    // Not from the server's auth (e.g. the transport failed): keep the text.
  }
  return { connected: false, message: err.message, error: body };
}

async function whoami(how) {
  let socket;
  try {
    socket = await connect(how);
  } catch (err) {
    return refusal(err);
  }
  const me = await socket.timeout(DEADLINE_MS).emitWithAck("whoami");
  socket.close();
  return { connected: true, whoami: me };
}

async function flood() {
  let socket;
  try {
    socket = await connect("payload");
  } catch (err) {
    return refusal(err);
  }
  const echoes = [];
  const limited = [];
  // Every event is answered by `echo` or `rate_limited`: wait for all answers.
  const answered = new Promise((resolve) => {
    const check = () => echoes.length + limited.length >= count && resolve();
    socket.on("echo", (data) => {
      echoes.push(data);
      check();
    });
    socket.on("rate_limited", (data) => {
      limited.push(data);
      check();
    });
  });
  for (let i = 0; i < count; i += 1) socket.emit("echo", { n: i });
  const timedOut = await Promise.race([
    answered.then(() => false),
    new Promise((resolve) => setTimeout(() => resolve(true), DEADLINE_MS).unref()),
  ]);
  socket.close();
  return { connected: true, timed_out: timedOut, echoes, rate_limited: limited };
}

async function connects() {
  const outcomes = [];
  for (let i = 0; i < count; i += 1) {
    try {
      const socket = await connect("payload");
      socket.close();
      outcomes.push({ connected: true });
    } catch (err) {
      outcomes.push(refusal(err));
    }
  }
  return { outcomes };
}

async function revoked() {
  let socket;
  try {
    socket = await connect("payload");
  } catch (err) {
    return refusal(err);
  }
  let event = null;
  socket.on("revoked", (data) => {
    event = data;
  });
  const disconnected = new Promise((resolve) => socket.once("disconnect", (reason) => resolve(reason)));
  console.log(JSON.stringify({ connected: true }));
  const reason = await Promise.race([
    disconnected,
    new Promise((resolve) => setTimeout(() => resolve(null), DEADLINE_MS).unref()),
  ]);
  socket.close();
  return { disconnected: reason !== null, reason, revoked: event };
}

const scenarios = {
  payload: () => whoami("payload"),
  header: () => whoami("header"),
  protocol: () => whoami("protocol"),
  flood,
  connects,
  revoked,
};

const run = scenarios[scenario];
if (!run) {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
try {
  console.log(JSON.stringify(await run()));
  process.exit(0);
} catch (err) {
  console.log(JSON.stringify({ failed: String(err && err.message) }));
  process.exit(1);
}
