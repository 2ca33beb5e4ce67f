// Keep-alive HTTPS load with a client certificate (wrk, h2load and httperf cannot present one).
//   node bench/keepalive.js URL SECONDS CONNECTIONS CERT KEY CA
// Prints {requests, errors, rps, p50, p99} (milliseconds) as JSON.
const https = require("https");
const fs = require("fs");

const [url, seconds, connections, cert, key, ca] = process.argv.slice(2);
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
let active = Number(connections);
const end = Date.now() + Number(seconds) * 1000;

function finish() {
  if (--active > 0) return;
  latencies.sort((a, b) => a - b);
  const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(latencies.length * q))];
  console.log(JSON.stringify({
    requests: latencies.length, errors, rps: latencies.length / Number(seconds),
    p50: at(0.5), p99: at(0.99), firstError,
  }));
  agent.destroy();
}

function one() {
  const started = process.hrtime.bigint();
  https.get(url, { agent }, (res) => {
    res.resume();
    res.on("end", () => {
      if (res.statusCode !== 200) { errors++; firstError = firstError || res.statusCode; }
      else latencies.push(Number(process.hrtime.bigint() - started) / 1e6);
      if (Date.now() < end) one(); else finish();
    });
  }).on("error", (e) => {
    errors++;
    firstError = firstError || e.message;
    if (Date.now() < end) one(); else finish();
  });
}

for (let i = 0; i < Number(connections); i++) one();
