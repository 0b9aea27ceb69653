import assert from "node:assert/strict";
import { type AlertChannel, Alerts } from "../../src/alerts/alerts.ts";
import { Logger } from "../../src/log.ts";
import { TopicTemplate } from "../../src/mqtt/topic_template.ts";
import type { OutRecord, Sink } from "../../src/pipeline/types.ts";

function channel(connected = true) {
  const published: [string, string][] = [];
  const c: AlertChannel = {
    description: "test://",
    publish: (topic, payload) => {
      if (connected) published.push([topic, payload]);
      return connected;
    },
    close: () => Promise.resolve(),
  };
  return { c, published };
}

const record = (key: string | undefined, anomaly: boolean): OutRecord => ({
  key,
  value: `{"key":${JSON.stringify(key)},"anomaly":${anomaly}}`,
  headers: {},
  anomaly,
});

Deno.test("Alerts: anomalies only by default, to the key's topic; a key with a wildcard is dropped and counted", () => {
  const { c, published } = channel();
  const lines: string[] = [];
  const alerts = new Alerts(
    new TopicTemplate("cars/{key}/alerts", "--alerts"),
    "anomalies",
    c,
    Logger.messages((m) => lines.push(m)),
  );
  alerts.publish([
    record("car-1", false),
    record("car-2", true),
    record("bad#", true),
    record("car-3", true),
  ]);
  assert.deepEqual(published.map(([t]) => t), ["cars/car-2/alerts", "cars/car-3/alerts"]);
  assert.equal(alerts.published, 2);
  assert.equal(alerts.dropped, 1);
  assert.equal(
    lines.filter((l) => /alerts: not published: its key "bad#" holds an MQTT wildcard/.test(l)).length,
    1,
  );
});

Deno.test("Alerts: all predictions with 'all'; a channel down drops them (counted), never queues", () => {
  const { c, published } = channel(false);
  const alerts = new Alerts(new TopicTemplate("a/{key}", "--alerts"), "all", c, Logger.messages(() => {}));
  alerts.publish([record("k", false), record("k", true)]);
  assert.equal(published.length, 0);
  assert.equal(alerts.dropped, 2);
});

Deno.test("Alerts.wrap: the batch goes to the sink first, its alerts right after, without waiting for durability", async () => {
  const order: string[] = [];
  let durable!: () => void;
  const sink: Sink = {
    description: "s",
    send: () => {
      order.push("send");
      return new Promise<void>((resolve) => durable = resolve);
    },
    close: () => Promise.resolve(),
  };
  const c: AlertChannel = {
    description: "t",
    publish: () => {
      order.push("alert");
      return true;
    },
    close: () => Promise.resolve(),
  };
  const wrapped = new Alerts(new TopicTemplate("a/{key}", "--alerts"), "all", c, Logger.messages(() => {}))
    .wrap(
      sink,
    );
  const sent = wrapped.send([record("k", true)]);
  assert.deepEqual(order, ["send", "alert"], "the alert went out before the batch was durable");
  durable();
  await sent;
});

Deno.test("Alerts: with --alert-hysteresis, 'anomalies' follows the device's alert, not the reading", () => {
  const { c, published } = channel();
  const alerts = new Alerts(
    new TopicTemplate("a/{key}", "--alerts"),
    "anomalies",
    c,
    Logger.messages(() => {}),
  );
  const withAlert = (anomaly: boolean, alert: boolean, value: string) => ({
    ...record("k", anomaly),
    alert,
    value,
  });
  alerts.publish([
    withAlert(true, false, "anomaly, alert closed"),
    withAlert(true, true, "opens"),
    withAlert(false, true, "normal, still open"),
    withAlert(false, true, "closes"),
    withAlert(false, false, "closed"),
  ]);
  assert.deepEqual(published.map(([, v]) => v), ["opens", "normal, still open", "closes"]);
});
