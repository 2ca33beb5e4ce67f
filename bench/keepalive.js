// Keep-alive HTTPS load with a client certificate (wrk, h2load and httperf cannot present one).
//   node bench/keepalive.js URL SECONDS CONNECTIONS CERT KEY CA [OPTIONS]
// Prints {requests, errors, rps, p50, p99, firstError} (milliseconds) as JSON, plus p90, max,
// mean, sent (requests started in the measured window) and elapsed (seconds from the window's
// start to the last counted answer). Without OPTIONS, as before: GETs URL in a closed loop (each
// connection sends its next request when the last one ends); only status 200 counts.
// OPTIONS (JSON, optional; bench/bench_rfq.py uses it):
//   method   "GET" (default) or "POST", ...
//   body     a string sent as the body with Content-Type: application/json
//   urls     URLs to take in turn instead of URL (e.g. one per RFQ to quote)
//   ok       status codes that count as answers (default [200])
//   warmup   seconds run before the measured SECONDS; their requests are not counted
//   rate     requests per second, open loop: a request is due every 1/rate s whether or not
//            the earlier ones have answered (at most CONNECTIONS in flight, the rest queue),
//            and its latency counts from when it was due, so queueing is not hidden; rps is
//            then answers / max(SECONDS, elapsed), the rate actually served
const https = require("https");
const fs = require("fs");

const [url, seconds, connections, cert, key, ca, optionsJson] = process.argv.slice(2);
const options = optionsJson ? JSON.parse(optionsJson) : {};
const method = options.method || "GET";
const body = options.body === undefined ? null : Buffer.from(options.body);
const urls = options.urls && options.urls.length ? options.urls : [url];
const okStatus = new Set(options.ok || [200]);
const warmup = Number(options.warmup || 0) * 1000;
const rate = Number(options.rate || 0);
const agent = new https.Agent({
  keepAlive: true,
  maxSockets: Number(connections),
  cert: fs.readFileSync(cert),
  key: fs.readFileSync(key),
  ca: fs.readFileSync(ca),
});
const latencies = [];
let errors = 0;
let firstError = null;
let sent = 0;
let next = 0;
let lastAnswer = 0;
const startedAt = Date.now();
const measureFrom = startedAt + warmup;
const end = measureFrom + Number(seconds) * 1000;

function report() {
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))];
  const sum = latencies.reduce((a, b) => a + b, 0);
  const elapsed = Math.max(0, lastAnswer - measureFrom) / 1000;
  const window = rate ? Math.max(Number(seconds), elapsed) : Number(seconds);
  console.log(JSON.stringify({
    requests: latencies.length, errors, rps: latencies.length / window, elapsed,
    p50: at(0.5), p90: at(0.9), p99: at(0.99), max: latencies[latencies.length - 1],
    mean: latencies.length ? sum / latencies.length : undefined, sent, firstError,
  }));
  agent.destroy();
}

// dueAt: process.hrtime.bigint() when the request was due (open loop) or sent (closed loop).
function request(dueAt, wallDue, done) {
  const target = urls[next++ % urls.length];
  const counted = wallDue >= measureFrom && wallDue < end;
  if (counted) sent++;
  const headers = body ? { "Content-Type": "application/json", "Content-Length": body.length } : {};
  const req = https.request(target, { agent, method, headers }, (res) => {
    res.resume();
    res.on("end", () => {
      if (counted) {
        lastAnswer = Date.now();
        if (!okStatus.has(res.statusCode)) { errors++; firstError = firstError || res.statusCode; }
        else latencies.push(Number(process.hrtime.bigint() - dueAt) / 1e6);
      }
      done();
    });
  });
  req.on("error", (e) => {
    if (counted) { lastAnswer = Date.now(); errors++; firstError = firstError || e.message; }
    done();
  });
  if (body) req.write(body);
  req.end();
}

if (!rate) {
  let active = Number(connections);
  const one = () => request(process.hrtime.bigint(), Date.now(), () => {
    if (Date.now() < end) one(); else if (--active === 0) report();
  });
  for (let i = 0; i < Number(connections); i++) one();
} else {
  const t0 = process.hrtime.bigint();
  const interval = 1e9 / rate;  // nanoseconds
  const total = Math.floor(((warmup / 1000) + Number(seconds)) * rate);
  let issued = 0;
  let pending = 0;
  let finished = false;
  const done = () => { if (--pending === 0 && finished) report(); };
  const tick = () => {
    const elapsed = Number(process.hrtime.bigint() - t0);
    while (issued < total && issued * interval <= elapsed) {
      const dueNs = BigInt(Math.round(issued * interval));
      pending++;
      request(t0 + dueNs, startedAt + Number(dueNs) / 1e6, done);
      issued++;
    }
    if (issued < total) setTimeout(tick, 1);
    else { finished = true; if (pending === 0) report(); }
  };
  tick();
}
