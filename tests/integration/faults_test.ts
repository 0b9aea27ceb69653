/**
 * An operator's bad day on the shared brokers: poison pills and bursts. edgeinfer runs as a process.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import mqtt from "mqtt";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { spawnCli } from "../cli/run_cli.ts";
import {
  consume,
  KAFKA_BROKERS,
  MQTT_HOSTPORT,
  MQTT_URL,
  prepareMqttSession,
  uniqueName,
} from "./brokers.ts";

const KAFKA = KAFKA_BROKERS.join(",");

async function publishAll(topic: string, payloads: (string | Uint8Array)[]): Promise<void> {
  const client = await mqtt.connectAsync(MQTT_URL, { reconnectPeriod: 0 });
  client.setMaxListeners(0); // many publishes in flight wait for 'drain' together
  for (const p of payloads) {
    await client.publishAsync(topic, typeof p === "string" ? p : Buffer.from(p), { qos: 1 });
  }
  await client.endAsync();
}

const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** Runs `edgeinfer run` from an MQTT session to a Kafka sink URL until it exits; returns its stderr. */
async function runMqttToKafka(
  base: string,
  clientId: string,
  sink: string,
  flags: string[],
): Promise<string> {
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  const run = spawnCli([
    "run",
    "--model",
    model,
    "--source",
    `mqtt://${MQTT_HOSTPORT}/${base}/+?client-id=${clientId}`,
    "--sink",
    sink,
    ...flags,
  ]);
  assert.equal(await run.exit(), 0, run.stderr());
  return run.stderr();
}

/** Asserts that `topic` holds exactly one prediction for each id in 0..count-1. */
async function assertPredicted(topic: string, count: number): Promise<void> {
  const predicted = (await consume(topic, count)).map((r) => JSON.parse(r.value).id);
  assert.deepEqual(predicted.sort((a, b) => a - b), Array.from({ length: count }, (_, i) => i));
}

Deno.test("Poison pills over MQTT with a Kafka dead-letter topic: each becomes a dead letter that fits, every good event is predicted", async () => {
  const base = uniqueName("poison");
  const out = uniqueName("poison-out");
  const dlq = uniqueName("poison-dlq");
  const clientId = uniqueName("edgeinfer-test");
  await prepareMqttSession(clientId, `${base}/+`);
  const good = (id: number) => JSON.stringify({ id, a: id });
  // 2 MB over --max-payload-bytes; 200 KB of control characters (JSON-escaped x6: 1.2 MB);
  // a valid event whose 1.5 MB passthrough field makes a prediction larger than Kafka takes.
  const huge = new TextEncoder().encode("x".repeat(2 * 1024 * 1024));
  const control = new Uint8Array(200 * 1024).fill(0x01);
  const blob = new TextEncoder().encode(JSON.stringify({ id: 100, a: 1, blob: "b".repeat(1_500_000) }));
  await publishAll(`${base}/car`, [
    ...Array.from({ length: 10 }, (_, i) => good(i)),
    huge,
    control,
    blob,
    ...Array.from({ length: 10 }, (_, i) => good(10 + i)),
  ]);
  await runMqttToKafka(base, clientId, `kafka://${KAFKA}/${out}`, [
    "--dlq",
    `kafka://${KAFKA}/${dlq}`,
    "--passthrough",
    "blob",
    "--max-payload-bytes",
    "1600000",
    "--max-events",
    "23",
  ]);
  await assertPredicted(out, 20);
  const dead = await consume(dlq, 3);
  assert.equal(dead.length, 3);
  for (const record of dead) {
    assert.ok(record.value.length < 70 * 1024, `a dead letter of ${record.value.length} bytes`);
  }
  const [tooBig, garbage, refused] = dead.map((r) => JSON.parse(r.value));
  assert.equal(tooBig.error, "payload of 2097152 bytes exceeds --max-payload-bytes 1600000");
  assert.equal(tooBig.payload_bytes, 2097152);
  assert.equal(tooBig.payload_sha256, sha256(huge));
  assert.equal(tooBig.payload_truncated, true);
  assert.match(garbage.error, /^invalid JSON/);
  assert.equal(garbage.payload_sha256, sha256(control));
  assert.equal(garbage.payload_truncated, true);
  assert.match(
    refused.error,
    /^the sink refused the prediction: record of ~\d+ bytes exceeds the Kafka sink's limit/,
  );
  assert.equal(refused.payload_bytes, blob.length);
  assert.equal(refused.payload_sha256, sha256(blob));
});

Deno.test("A burst into MQTT → Kafka never holds more than batch-size × (max-in-flight + 1) events in flight", async () => {
  const base = uniqueName("burst");
  const out = uniqueName("burst-out");
  const clientId = uniqueName("edgeinfer-test");
  const total = 30_000;
  await prepareMqttSession(clientId, `${base}/+`);
  // Queued first, so edgeinfer meets the whole burst at once.
  const client = await mqtt.connectAsync(MQTT_URL, { reconnectPeriod: 0 });
  client.setMaxListeners(0);
  const publishes: Promise<unknown>[] = [];
  for (let i = 0; i < total; i++) {
    publishes.push(client.publishAsync(`${base}/car`, JSON.stringify({ id: i, a: i }), { qos: 1 }));
  }
  await Promise.all(publishes);
  await client.endAsync();
  const stderr = await runMqttToKafka(base, clientId, `kafka://${KAFKA}/${out}`, [
    "--batch-size",
    "64",
    "--max-in-flight",
    "2",
    "--max-events",
    String(total),
  ]);
  const done = /peak (\d+) batches \/ (\d+) events in flight \(bound (\d+) \/ (\d+)\)/.exec(stderr);
  assert.ok(done, stderr);
  const [peakBatches, peakEvents, boundBatches, boundEvents] = done.slice(1).map(Number);
  assert.equal(boundEvents, 64 * 3);
  assert.ok(peakBatches <= boundBatches, `peak ${peakBatches} batches in flight, bound ${boundBatches}`);
  assert.ok(peakEvents <= boundEvents, `peak ${peakEvents} events in flight, bound ${boundEvents}`);
  assert.ok(peakEvents >= 64, "the burst did fill the pipeline");
  const ids = new Set((await consume(out, total, 60_000)).map((r) => JSON.parse(r.value).id));
  assert.equal(ids.size, total);
});

Deno.test("A record the broker refuses as too large is found by re-sending one by one, dead-lettered, and the rest delivered", async () => {
  const base = uniqueName("refused");
  const out = uniqueName("refused-out");
  const dlq = uniqueName("refused-dlq");
  const clientId = uniqueName("edgeinfer-test");
  await prepareMqttSession(clientId, `${base}/+`);
  // Queued before edgeinfer starts, so the big prediction shares a produce request with good ones.
  const blob = JSON.stringify({ id: 100, a: 1, blob: "b".repeat(1_500_000) });
  await publishAll(`${base}/car`, [
    ...Array.from({ length: 10 }, (_, i) => JSON.stringify({ id: i, a: i })),
    blob,
    ...Array.from({ length: 10 }, (_, i) => JSON.stringify({ id: 10 + i, a: i })),
  ]);
  // max-record-bytes above the broker's 1 MiB limit: only the broker can refuse the 1.5 MB prediction
  // (uncompressed: the default zstd would shrink the repeated bytes below the limit).
  await runMqttToKafka(base, clientId, `kafka://${KAFKA}/${out}?max-record-bytes=5000000&compression=none`, [
    "--dlq",
    `kafka://${KAFKA}/${dlq}`,
    "--passthrough",
    "blob",
    "--max-payload-bytes",
    "1600000",
    "--max-events",
    "21",
  ]);
  await assertPredicted(out, 20);
  const [dead] = await consume(dlq, 1);
  const record = JSON.parse(dead.value);
  assert.match(record.error, /^the sink refused the prediction: Kafka refused the record: MESSAGE_TOO_LARGE/);
  assert.equal(record.payload_sha256, sha256(new TextEncoder().encode(blob)));
});
