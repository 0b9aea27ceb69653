/**
 * edgeinfer run as a process against the real Mosquitto and Kafka (scripts/services.sh up).
 */
import assert from "node:assert/strict";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { assertSeedScore, seedFixture, spawnCli } from "../cli/run_cli.ts";
import {
  committedOffsets,
  consume,
  createTopic,
  KAFKA_BROKERS,
  MQTT_HOSTPORT,
  prepareMqttSession,
  produce,
  publishMqtt,
  queuedForSession,
  topicEnds,
  uniqueName,
  waitForCommittedEnd,
} from "./brokers.ts";

const KAFKA = KAFKA_BROKERS.join(",");
const seed = seedFixture();
if (!seed) console.warn("SKIPPING seed-ksql-udf broker tests: ../shared/seed-ksql-udf is absent");

function assertSeedRecords(values: string[], expected: Map<string, number>) {
  assert.equal(values.length, 23);
  const ids = new Set<string>();
  for (const value of values) {
    const record = JSON.parse(value);
    ids.add(record.id);
    assertSeedScore(record.score, expected.get(record.id)!, `event ${record.id}`);
  }
  assert.equal(ids.size, 23, "one prediction per event");
}

Deno.test({
  name: "MQTT → Kafka: the 23 seed messages at QoS 1 give 23 predictions with the UDF's scores, all PUBACKed",
  ignore: !seed,
  async fn() {
    const { lines, expected } = seed!;
    const topic = `${uniqueName("ecg")}/ecg`;
    const out = uniqueName("ecg-predictions");
    const clientId = uniqueName("edgeinfer-test");
    // Queue the messages in a persistent session first: edgeinfer then receives what the broker
    // kept for it while it was not connected, as after a restart.
    await prepareMqttSession(clientId, topic);
    await publishMqtt(topic, lines);
    const run = spawnCli([
      "run",
      "--model",
      seed!.model,
      "--format",
      "delimited",
      "--source",
      `mqtt://${MQTT_HOSTPORT}/${topic}?qos=1&client-id=${clientId}`,
      "--sink",
      `kafka://${KAFKA}/${out}`,
      "--max-events",
      "23",
    ]);
    assert.equal(await run.exit(), 0, run.stderr());
    const records = await consume(out, 23);
    assertSeedRecords(records.map((r) => r.value), expected);
    for (const r of records) {
      assert.equal(r.key, topic, "keyed by the MQTT topic");
      assert.equal(r.headers["edgeinfer-source"], `mqtt:${topic}`);
    }
    assert.equal(await queuedForSession(clientId), 0, "every delivered message was PUBACKed");
  },
});

Deno.test({
  name: "Kafka → Kafka: the 23 seed messages give the UDF's scores and the group commits every offset",
  ignore: !seed,
  async fn() {
    const { lines, expected } = seed!;
    const input = uniqueName("ecg-in");
    const out = uniqueName("ecg-out");
    const group = uniqueName("edgeinfer");
    await createTopic(input, 3);
    await produce(input, lines.map((line) => ({ key: line.split(",")[0], value: line })));
    const run = spawnCli([
      "run",
      "--model",
      seed!.model,
      "--format",
      "delimited",
      "--source",
      `kafka://${KAFKA}/${input}?group=${group}`,
      "--sink",
      `kafka://${KAFKA}/${out}`,
      "--max-events",
      "23",
    ]);
    assert.equal(await run.exit(), 0, run.stderr());
    const records = await consume(out, 23);
    assertSeedRecords(records.map((r) => r.value), expected);
    for (const r of records) assert.equal(r.key, JSON.parse(r.value).id, "keyed by the input's Kafka key");
    const committed = await committedOffsets(group, input);
    const perPartition = new Map<number, number>();
    for (const r of records) {
      const partition = Number(r.headers["edgeinfer-source"].split("/")[1]);
      perPartition.set(partition, (perPartition.get(partition) ?? 0) + 1);
    }
    for (const [partition, offset] of committed) {
      assert.equal(
        offset,
        perPartition.get(partition) ?? -1,
        `partition ${partition} committed up to its last event`,
      );
    }
  },
});

Deno.test("Kafka → Kafka with --max-events commits exactly the offsets whose predictions arrived; a rerun gets the rest", async () => {
  const model = await linearModelFile({ features: ["a", "b"], weights: [1, 1], bias: 0, threshold: 150 });
  const input = uniqueName("cars-in");
  const out = uniqueName("cars-out");
  const dlq = uniqueName("cars-dlq");
  const group = uniqueName("edgeinfer");
  await createTopic(input, 2);
  const events = Array.from(
    { length: 100 },
    (_, i) =>
      i === 17 || i === 58 ? { key: `car-${i % 5}`, value: "{broken" } : {
        key: `car-${i % 5}`,
        value: JSON.stringify({ car: `car-${i % 5}`, id: i, a: i, b: 1 }),
      },
  );
  await produce(input, events);
  const args = (maxEvents: number) => [
    "run",
    "--model",
    model,
    "--source",
    `kafka://${KAFKA}/${input}?group=${group}`,
    "--sink",
    `kafka://${KAFKA}/${out}`,
    "--dlq",
    `kafka://${KAFKA}/${dlq}`,
    "--key-field",
    "car",
    "--batch-size",
    "16",
    "--max-events",
    String(maxEvents),
  ];

  const first = spawnCli(args(60));
  assert.equal(await first.exit(), 0, first.stderr());
  const firstOut = await consume(out, 1000, 5000);
  const firstDead = await consume(dlq, 1000, 3000);
  assert.equal(firstOut.length + firstDead.length, 60, "60 events handled");
  const committed = await committedOffsets(group, input);
  const handled = new Map<number, number[]>();
  for (const r of [...firstOut, ...firstDead]) {
    const [, partition, offset] = r.headers["edgeinfer-source"].split("/").map(Number);
    handled.set(partition, [...(handled.get(partition) ?? []), offset]);
  }
  let sum = 0;
  for (const [partition, offset] of committed) {
    const offsets = (handled.get(partition) ?? []).sort((x, y) => x - y);
    assert.deepEqual(offsets, Array.from({ length: offsets.length }, (_, i) => i), "a contiguous prefix");
    assert.equal(
      Math.max(offset, 0),
      offsets.length,
      `partition ${partition}: commit covers exactly the handled events`,
    );
    sum += offsets.length;
  }
  assert.equal(sum, 60);

  const second = spawnCli(args(40));
  assert.equal(await second.exit(), 0, second.stderr());
  const allOut = await consume(out, 98);
  const ids = new Set(allOut.map((r) => JSON.parse(r.value).id));
  assert.equal(ids.size, 98, "every good event predicted once across the two runs");
  const dead = await consume(dlq, 2);
  assert.equal(dead.length, 2);
  for (const d of dead) {
    assert.match(JSON.parse(d.value).error, /^invalid JSON/);
    assert.equal(JSON.parse(d.value).payload, "{broken");
    assert.match(d.headers["edgeinfer-error"], /^invalid JSON/);
  }
  for (const r of allOut) assert.equal(r.key, JSON.parse(r.value).key, "keyed by --key-field");
});

Deno.test("SIGTERM stops a Kafka run cleanly: it flushes, commits what was written and exits 0", async () => {
  const model = await linearModelFile({ features: ["a"], weights: [2], bias: 0 });
  const input = uniqueName("stream-in");
  const out = uniqueName("stream-out");
  const group = uniqueName("edgeinfer");
  await createTopic(input, 1);
  await produce(input, Array.from({ length: 2000 }, (_, i) => ({ value: JSON.stringify({ a: i }) })));
  const run = spawnCli([
    "run",
    "--model",
    model,
    "--source",
    `kafka://${KAFKA}/${input}?group=${group}`,
    "--sink",
    `kafka://${KAFKA}/${out}`,
    "--status-every",
    "0.2",
  ]);
  await run.waitForStderr(/status: [1-9]\d* events acked/);
  run.child.kill("SIGTERM");
  assert.equal(await run.exit(), 0, run.stderr());
  assert.match(run.stderr(), /stopping/);
  const written = await consume(out, 2000, 5000);
  const committed = await committedOffsets(group, input);
  assert.equal(committed.get(0), written.length, "committed offset = predictions written");
});

Deno.test("MQTT → Kafka with JSON: keyed by a field, bad payloads to the Kafka DLQ, both acknowledged", async () => {
  const model = await linearModelFile({ features: ["speed"], weights: [1], bias: 0, threshold: 10 });
  const base = uniqueName("cars");
  const out = uniqueName("json-out");
  const dlq = uniqueName("json-dlq");
  const clientId = uniqueName("edgeinfer-test");
  await prepareMqttSession(clientId, `${base}/+/sensors`);
  await publishMqtt(`${base}/car-1/sensors`, [`{"car":"car-1","speed":5}`, `{"car":"car-1","speed":"x"}`]);
  await publishMqtt(`${base}/car-2/sensors`, [`{"car":"car-2","speed":50}`]);
  const run = spawnCli([
    "run",
    "--model",
    model,
    "--source",
    `mqtt://${MQTT_HOSTPORT}/${base}/+/sensors?client-id=${clientId}`,
    "--key-field",
    "car",
    "--sink",
    `kafka://${KAFKA}/${out}`,
    "--dlq",
    `kafka://${KAFKA}/${dlq}`,
    "--max-events",
    "3",
  ]);
  assert.equal(await run.exit(), 0, run.stderr());
  const records = (await consume(out, 2)).map((r) => [r.key, JSON.parse(r.value).anomaly]);
  assert.deepEqual(records.sort(), [["car-1", false], ["car-2", true]]);
  const [dead] = await consume(dlq, 1);
  assert.equal(JSON.parse(dead.value).error, `feature 'speed' is not a number: "x"`);
  assert.equal(await queuedForSession(clientId), 0);
});

/**
 * The crash half of the SIGKILL tests: runs edgeinfer (batch 1, slow enough that the kill lands
 * mid-stream) from `source` to the Kafka topic `out`, kills it with SIGKILL once it acked some
 * events, checks it had not written everything, and returns the arguments for the restart.
 */
async function killMidStream(source: string, out: string, total: number): Promise<string[]> {
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  const args = [
    "run",
    "--model",
    model,
    "--source",
    source,
    "--sink",
    `kafka://${KAFKA}/${out}`,
    "--batch-size",
    "1",
    "--status-every",
    "0.2",
  ];
  const first = spawnCli(args);
  await first.waitForStderr(/status: [1-9]\d* events acked/);
  first.child.kill("SIGKILL");
  await first.exit();
  const beforeRestart = await consume(out, total, 3000);
  assert.ok(beforeRestart.length < total, `killed mid-stream (${beforeRestart.length} of ${total} written)`);
  return args;
}

Deno.test("Kafka → Kafka: a run killed with SIGKILL mid-stream loses nothing; the next run scores the rest", async () => {
  const input = uniqueName("crash-in");
  const out = uniqueName("crash-out");
  const group = uniqueName("edgeinfer");
  const total = 10_000;
  await createTopic(input, 2);
  for (let i = 0; i < total; i += 5000) {
    await produce(
      input,
      Array.from(
        { length: 5000 },
        (_, j) => ({ key: `k${(i + j) % 7}`, value: JSON.stringify({ id: i + j, a: i + j }) }),
      ),
    );
  }
  const args = await killMidStream(`kafka://${KAFKA}/${input}?group=${group}`, out, total);

  const second = spawnCli(args);
  await waitForCommittedEnd(group, input, await topicEnds(input));
  second.child.kill("SIGTERM");
  assert.equal(await second.exit(), 0, second.stderr());

  const records = await consume(out, total * 2, 10_000);
  const ids = new Set(records.map((r) => JSON.parse(r.value).id));
  assert.equal(ids.size, total, "every event has a prediction (some twice: at-least-once)");
});

Deno.test("MQTT → Kafka: a run killed with SIGKILL mid-stream loses nothing; the broker redelivers what was not PUBACKed", async () => {
  const base = uniqueName("crash");
  const out = uniqueName("crash-mqtt-out");
  const clientId = uniqueName("edgeinfer-test");
  const total = 10_000;
  await prepareMqttSession(clientId, `${base}/+`);
  await publishMqtt(`${base}/car`, Array.from({ length: total }, (_, i) => JSON.stringify({ id: i, a: i })));
  const args = await killMidStream(`mqtt://${MQTT_HOSTPORT}/${base}/+?client-id=${clientId}`, out, total);

  const second = spawnCli(args);
  let ids = new Set<unknown>();
  for (let attempt = 0; ids.size < total && attempt < 20; attempt++) {
    await new Promise((r) => setTimeout(r, 1000));
    ids = new Set((await consume(out, total * 2, 3000)).map((r) => JSON.parse(r.value).id));
  }
  second.child.kill("SIGTERM");
  assert.equal(await second.exit(), 0, second.stderr());
  assert.equal(ids.size, total, "every event has a prediction (some twice: at-least-once)");
  assert.equal(await queuedForSession(clientId), 0, "all PUBACKed by the second run");
});
