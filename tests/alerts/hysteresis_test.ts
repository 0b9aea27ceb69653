import assert from "node:assert/strict";
import { DeviceAlerts, parseHysteresisRule } from "../../src/alerts/hysteresis.ts";
import { PredictionEncoder } from "../../src/codecs/prediction.ts";
import { emptyMeta } from "../../src/codecs/decoder.ts";

const BOUNDS = { maxDevices: 1000, idleMs: 3_600_000 };

/** Feeds a stream of 'A' (anomalous) and '.' (normal) readings of one key; returns the open state after each. */
function feed(alerts: DeviceAlerts, key: string, stream: string, start = 1): string {
  let states = "";
  for (let i = 0; i < stream.length; i++) {
    const s = alerts.observe(key, stream[i] === "A", start + i);
    states += alerts.changed ? (s.open ? "O" : "C") : s.open ? "o" : "-";
  }
  return states;
}

Deno.test("hysteresis: K of N opens exactly at the K-th anomaly within the window", () => {
  const alerts = new DeviceAlerts({ openAnomalies: 3, window: 5, closeNormals: 4 }, BOUNDS);
  // Anomalies at 0, 2, 4: the third one lies within 5 readings of the first.
  assert.equal(feed(alerts, "car-1", "A.A.A"), "----O");
  assert.equal(alerts.openNow, 1);
  assert.equal(alerts.opened, 1);
  // Anomalies at 0, 3, 6: never 3 within 5.
  const spread = new DeviceAlerts({ openAnomalies: 3, window: 5, closeNormals: 4 }, BOUNDS);
  assert.equal(feed(spread, "car-1", "A..A..A..A"), "----------");
  // The window slides: at 0, 3, 6, 7 the 3 of 5 are 3, 6, 7.
  const sliding = new DeviceAlerts({ openAnomalies: 3, window: 5, closeNormals: 4 }, BOUNDS);
  assert.equal(feed(sliding, "car-1", "A..A..AA"), "-------O");
});

Deno.test("hysteresis: isolated anomalies never open the alert", () => {
  const alerts = new DeviceAlerts({ openAnomalies: 2, window: 4, closeNormals: 3 }, BOUNDS);
  assert.equal(feed(alerts, "car-1", "A...A...A...A..."), "-".repeat(16));
  assert.equal(alerts.opened, 0);
});

Deno.test("hysteresis: closes after M consecutive normals; an anomaly in between restarts the count", () => {
  const alerts = new DeviceAlerts({ openAnomalies: 2, window: 3, closeNormals: 3 }, BOUNDS);
  assert.equal(feed(alerts, "car-1", "AA...."), "-OooC-");
  assert.equal(alerts.openNow, 0);
  assert.equal(alerts.closed, 1);
  const interrupted = new DeviceAlerts({ openAnomalies: 2, window: 3, closeNormals: 3 }, BOUNDS);
  assert.equal(feed(interrupted, "car-1", "AA..A..A...."), "-O" + "oooooooo" + "C-");
  // Closing clears the window: one more anomaly does not reopen it, two do.
  assert.equal(feed(alerts, "car-1", "A.A", 100), "--O");
});

Deno.test("hysteresis: one device's readings do not move another's alert", () => {
  const alerts = new DeviceAlerts({ openAnomalies: 2, window: 2, closeNormals: 1 }, BOUNDS);
  alerts.observe("car-1", true, 1);
  alerts.observe("car-2", true, 2);
  assert.equal(alerts.observe("car-2", false, 3).open, false);
  assert.equal(alerts.observe("car-1", true, 4).open, true);
  assert.equal(alerts.changed, true);
  assert.equal(alerts.observe("car-2", true, 5).open, false);
  assert.equal(alerts.observe("car-1", true, 6).open, true);
  assert.equal(alerts.openNow, 1);
});

Deno.test("hysteresis: the device cap drops the least recently seen, which starts again closed", () => {
  const alerts = new DeviceAlerts({ openAnomalies: 1, window: 1, closeNormals: 5 }, {
    maxDevices: 2,
    idleMs: 3_600_000,
  });
  alerts.observe("a", true, 1); // opens
  alerts.observe("b", false, 2);
  alerts.observe("a", false, 3); // a is now the most recently seen
  alerts.observe("c", false, 4); // evicts b
  assert.equal(alerts.size, 2);
  assert.equal(alerts.evicted, 1);
  assert.equal(alerts.observe("a", false, 5).open, true, "a was kept");
  alerts.observe("d", false, 6); // evicts c
  alerts.observe("e", false, 7); // evicts a, open: the gauge follows
  assert.equal(alerts.size, 2);
  assert.equal(alerts.evicted, 3);
  assert.equal(alerts.openNow, 0);
  const a = alerts.observe("a", false, 8);
  assert.equal(a.open, false, "an evicted device starts closed");
  assert.equal(alerts.changed, false);
  for (let i = 0; i < 10_000; i++) alerts.observe(`k${i}`, i % 2 === 0, 10 + i);
  assert.equal(alerts.size, 2);
});

Deno.test("hysteresis: a device unseen for --alert-idle starts again closed", () => {
  const alerts = new DeviceAlerts({ openAnomalies: 2, window: 3, closeNormals: 5 }, {
    maxDevices: 100,
    idleMs: 1000,
  });
  alerts.observe("a", true, 0);
  alerts.observe("b", true, 600);
  assert.equal(alerts.observe("a", true, 1000).open, true, "1000 ms idle is not over the limit");
  alerts.observe("b", false, 1500);
  assert.equal(alerts.openNow, 1);
  // At 2001 a is 1001 ms idle: swept before the reading, its window gone.
  assert.equal(alerts.observe("b", false, 2001).open, false);
  assert.equal(alerts.size, 1, "a was forgotten");
  assert.equal(alerts.expired, 1);
  assert.equal(alerts.openNow, 0);
  assert.equal(alerts.observe("a", true, 2002).open, false, "one anomaly of a fresh window");
  // b's two readings are gone too: one anomaly does not open it.
  assert.equal(alerts.observe("b", true, 9000).open, false);
});

Deno.test("hysteresis: K/N,M parses; N up to 32 with a full window", () => {
  assert.deepEqual(parseHysteresisRule("3/5,10"), { openAnomalies: 3, window: 5, closeNormals: 10 });
  for (const bad of ["3/5", "6/5,1", "0/5,1", "3/33,1", "3/5,0", "a/b,c", ""]) {
    assert.equal(parseHysteresisRule(bad), undefined, bad);
  }
  const alerts = new DeviceAlerts({ openAnomalies: 32, window: 32, closeNormals: 1 }, BOUNDS);
  assert.equal(feed(alerts, "x", "A".repeat(31)), "-".repeat(31));
  assert.equal(feed(alerts, "x", "A.", 40), "OC");
  const wide = new DeviceAlerts({ openAnomalies: 2, window: 32, closeNormals: 1 }, BOUNDS);
  assert.equal(feed(wide, "x", "A" + ".".repeat(30) + "A"), "-".repeat(31) + "O");
  const slid = new DeviceAlerts({ openAnomalies: 2, window: 32, closeNormals: 1 }, BOUNDS);
  assert.equal(feed(slid, "x", "A" + ".".repeat(31) + "A"), "-".repeat(33));
});

Deno.test("hysteresis: the record carries the device's alert; without the option it is unchanged", () => {
  const options = { modelName: "m", modelVersion: "1", threshold: 0.5, passthrough: [], traceHeaders: false };
  const plain = new PredictionEncoder(options);
  const meta = { ...emptyMeta(), key: "car-1" };
  assert.equal(
    plain.encode(meta, undefined, { kind: "mqtt", topic: "t" }, 0.9, 7).value,
    `{"key":"car-1","score":0.9,"anomaly":true,"threshold":0.5,"model":{"name":"m","version":"1"},"ts":7}`,
  );
  const deviceAlerts = new DeviceAlerts({ openAnomalies: 2, window: 2, closeNormals: 1 }, BOUNDS);
  const encoder = new PredictionEncoder({ ...options, deviceAlerts });
  const values = [0.9, 0.9, 0.8, 0.1].map((score, i) => {
    const record = encoder.encode(meta, undefined, { kind: "mqtt", topic: "t" }, score, 10 + i);
    return [JSON.parse(record.value).alert, record.alert];
  });
  assert.deepEqual(values, [
    [{ open: false, changed: false }, false],
    [{ open: true, since: 11, changed: true }, true],
    [{ open: true, since: 11, changed: false }, true],
    [{ open: false, changed: true }, true],
  ]);
});
