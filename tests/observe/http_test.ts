import assert from "node:assert/strict";
import {
  EventLoopLag,
  health,
  MAX_EVENT_LOOP_LAG_MS,
  parseHttpAddress,
  serveObserve,
} from "../../src/observe/http.ts";
import { Metrics } from "../../src/observe/metrics.ts";
import { UsageError } from "../../src/errors.ts";
import { Health } from "../../src/pipeline/health.ts";
import { Stats } from "../../src/pipeline/stats.ts";

Deno.test("parseHttpAddress: HOST:PORT, [IPv6]:PORT; anything else names --http and an example", () => {
  assert.deepEqual(parseHttpAddress("127.0.0.1:9464"), { hostname: "127.0.0.1", port: 9464 });
  assert.deepEqual(parseHttpAddress("localhost:0"), { hostname: "localhost", port: 0 });
  assert.deepEqual(parseHttpAddress("[::1]:9464"), { hostname: "::1", port: 9464 });
  for (const bad of ["9464", "127.0.0.1", "127.0.0.1:99999", "http://127.0.0.1:9464", ":9464", "::1:9464"]) {
    assert.throws(() => parseHttpAddress(bad), (e: Error) => {
      return e instanceof UsageError && /^--http must be HOST:PORT, e\.g\. 127\.0\.0\.1:9464/.test(e.message);
    }, bad);
  }
});

Deno.test("health: 200 ok under the lag limit, 503 with the reason over it", () => {
  assert.deepEqual(health(3), [200, { status: "ok", event_loop_lag_seconds: 0.003 }]);
  const [status, body] = health(MAX_EVENT_LOOP_LAG_MS + 1000);
  assert.deepEqual(status, 503);
  assert.deepEqual(body.status, "unresponsive");
  assert.match(String(body.reason), /^the event loop was 3 s late within the last 30 s \(limit 2 s\)$/);
});

Deno.test("EventLoopLag: keeps the worst lateness of the recent window, forgets older", () => {
  const lag = new EventLoopLag();
  try {
    const t0 = performance.now();
    lag.note(2500, t0 + 1000);
    assert.deepEqual(lag.recentMaxMs, 2500);
    lag.note(1, t0 + 16_000); // a new half window: the old maximum is still in view
    assert.deepEqual(lag.recentMaxMs, 2500);
    lag.note(1, t0 + 32_000); // two half windows later it is gone
    assert.deepEqual(lag.recentMaxMs, 1);
  } finally {
    lag.stop();
  }
});

Deno.test("serveObserve: /metrics, /healthz, /readyz, 404; a taken port is a UsageError naming --http", async () => {
  const metrics = new Metrics();
  const pipeline = metrics.pipeline("main", {
    stats: new Stats(),
    health: new Health(),
    maxInFlight: 4,
    mustConnect: [],
  });
  const server = serveObserve({ hostname: "127.0.0.1", port: 0 }, metrics);
  try {
    const base = `http://127.0.0.1:${server.address.port}`;
    let r = await fetch(`${base}/metrics`);
    assert.deepEqual(r.status, 200);
    assert.match(r.headers.get("content-type")!, /^text\/plain; version=0\.0\.4/);
    assert.match(await r.text(), /edgeinfer_events_received_total\{pipeline="main"\} 0/);
    r = await fetch(`${base}/healthz`);
    assert.deepEqual([r.status, (await r.json()).status], [200, "ok"]);
    r = await fetch(`${base}/readyz`);
    assert.deepEqual([r.status, await r.json()], [503, {
      ready: false,
      reasons: ["pipeline main: model not loaded yet"],
    }]);
    pipeline.modelLoaded({ name: "m", version: "1", sha256: "00" });
    r = await fetch(`${base}/readyz`);
    assert.deepEqual([r.status, await r.json()], [200, { ready: true, reasons: [] }]);
    r = await fetch(`${base}/nothing`);
    assert.deepEqual(r.status, 404);
    await r.body?.cancel();
    assert.throws(
      () => serveObserve({ hostname: "127.0.0.1", port: server.address.port }, metrics),
      (e: Error) =>
        e instanceof UsageError &&
        e.message === `--http 127.0.0.1:${server.address.port}: the address is already in use ` +
            `(another edgeinfer?); choose another port`,
    );
  } finally {
    await server.close();
  }
});
