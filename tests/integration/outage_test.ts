/**
 * Outages on a real broker: a private Kafka (its own state dir and ports, auto.create.topics.enable=false)
 * that these tests stop and start with scripts/services.sh kafka-stop / kafka-up, so the shared brokers
 * the other tests use are never touched. edgeinfer runs as a process, as an operator runs it.
 */
import assert from "node:assert/strict";
import { Kafka, logLevel } from "kafkajs";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { type RunningCli, spawnCli } from "../cli/run_cli.ts";
import {
  committedOffsets,
  consume,
  createTopic,
  MQTT_HOSTPORT,
  prepareMqttSession,
  privateKafkaServices,
  produce,
  publishMqtt,
  queuedForSession,
  topicEnds,
  uniqueName,
} from "./brokers.ts";

const PORT = Number(Deno.env.get("EDGEINFER_OUTAGE_KAFKA_PORT") ?? 19092);
const BROKER = `127.0.0.1:${PORT}`;
/** Longer than the 30 s after which edgeinfer used to give up. */
const OUTAGE_MS = 35_000;

const privateKafka = new Kafka({
  clientId: "edgeinfer-tests",
  brokers: [BROKER],
  logLevel: logLevel.NOTHING,
});

/** scripts/services.sh kafka-up | kafka-stop | kafka-down on the private Kafka. */
const services = privateKafkaServices(
  Deno.env.get("EDGEINFER_OUTAGE_STATE") ?? "/tmp/edgeinfer-outage-kafka",
  PORT,
);

/** Distinct `id`s of the predictions in `topic` on the private Kafka, polled until `count` or `ms`. */
async function predictedIds(topic: string, count: number, ms: number): Promise<Set<number>> {
  const deadline = Date.now() + ms;
  let ids = new Set<number>();
  while (ids.size < count && Date.now() < deadline) {
    const records = await consume(topic, count * 2, 3000, privateKafka);
    ids = new Set(records.map((r) => JSON.parse(r.value).id));
  }
  return ids;
}

const json = (id: number) => JSON.stringify({ id, a: id % 100 });
const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Waits until stderr written after its first `from` characters matches `pattern`. */
async function waitForNewStderr(run: RunningCli, from: number, pattern: RegExp, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!pattern.test(run.stderr().slice(from))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${pattern}; stderr:\n${run.stderr()}`);
    await sleep(50);
  }
}

function assertRunning(run: RunningCli, name: string) {
  assert.equal(run.exited, undefined, `${name} exited (${run.exited}) during the outage:\n${run.stderr()}`);
}

Deno.test({
  name: "Kafka down at start, then down 35 s mid-stream: MQTT → Kafka and Kafka → Kafka runs wait, " +
    "then deliver every event, none lost, in the same process",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await services("kafka-down").catch(() => {});
    await services("kafka-up");
    const out = uniqueName("outage-out");
    const input = uniqueName("outage-in");
    const kout = uniqueName("outage-kout");
    const group = uniqueName("edgeinfer");
    await createTopic(out, 1, privateKafka);
    await createTopic(input, 2, privateKafka);
    await createTopic(kout, 1, privateKafka);
    await services("kafka-stop");

    const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
    const base = uniqueName("outage");
    const clientId = uniqueName("edgeinfer-test");
    await prepareMqttSession(clientId, `${base}/+`);
    const common = ["--model", model, "--status-every", "1", "--retry-max-backoff", "2s"];
    const mqttRun = spawnCli([
      "run",
      ...common,
      "--source",
      `mqtt://${MQTT_HOSTPORT}/${base}/+?client-id=${clientId}`,
      "--sink",
      `kafka://${BROKER}/${out}`,
    ]);
    const kafkaRun = spawnCli([
      "run",
      ...common,
      "--source",
      `kafka://${BROKER}/${input}?group=${group}`,
      "--sink",
      `kafka://${BROKER}/${kout}`,
    ]);
    try {
      // 1. Started while Kafka is down: both wait and say so; events published meanwhile are held.
      await publishMqtt(`${base}/car`, range(0, 1000).map(json));
      await mqttRun.waitForStderr(/status: 0 events acked.*waiting for Kafka sink 127\.0\.0\.1:\d+ since/);
      await kafkaRun.waitForStderr(/waiting for Kafka source 127\.0\.0\.1:\d+ since/);
      assertRunning(mqttRun, "MQTT → Kafka");
      assertRunning(kafkaRun, "Kafka → Kafka");
      await services("kafka-up");
      const upAt = Date.now();
      await produce(input, range(0, 5000).map((i) => ({ key: `k${i % 7}`, value: json(i) })), privateKafka);
      assert.equal(
        (await predictedIds(out, 1000, 60_000)).size,
        1000,
        "MQTT events held while Kafka was down",
      );
      assert.equal((await predictedIds(kout, 5000, 60_000)).size, 5000);
      console.log(`started with Kafka down: all delivered ${Date.now() - upAt} ms after Kafka was up`);

      // 2. Mid-stream: MQTT events keep arriving (200/s) while Kafka is down for 35 s.
      const publishing = (async () => {
        for (let i = 1000; i < 5000; i += 20) {
          await publishMqtt(`${base}/car`, range(i, i + 20).map(json));
          await sleep(100);
        }
      })();
      await sleep(2000);
      const [mqttSeen, kafkaSeen] = [mqttRun.stderr().length, kafkaRun.stderr().length];
      await services("kafka-stop");
      const downAt = Date.now();
      // The fault really stopped the traffic (a new outage is reported) before recovery is checked.
      await waitForNewStderr(mqttRun, mqttSeen, /Kafka sink 127\.0\.0\.1:\d+: .*retrying until it recovers/);
      await waitForNewStderr(
        kafkaRun,
        kafkaSeen,
        /Kafka source 127\.0\.0\.1:\d+: .*retrying until it recovers/,
      );
      await sleep(Math.max(0, OUTAGE_MS - (Date.now() - downAt)));
      assertRunning(mqttRun, "MQTT → Kafka");
      assertRunning(kafkaRun, "Kafka → Kafka");
      await services("kafka-up");
      const backAt = Date.now();
      await publishing;
      await produce(
        input,
        range(5000, 10_000).map((i) => ({ key: `k${i % 7}`, value: json(i) })),
        privateKafka,
      );
      const mqttIds = await predictedIds(out, 5000, 90_000);
      console.log(
        `after a ${Math.round((backAt - downAt) / 1000)} s outage: MQTT → Kafka caught up ` +
          `${Date.now() - backAt} ms after Kafka was up`,
      );
      const kafkaIds = await predictedIds(kout, 10_000, 90_000);
      assert.equal(mqttIds.size, 5000, "every MQTT event predicted (some twice: at-least-once)");
      assert.equal(kafkaIds.size, 10_000, "every Kafka event predicted");
      assertRunning(mqttRun, "MQTT → Kafka");
      assertRunning(kafkaRun, "Kafka → Kafka");
      const recoveries = mqttRun.stderr().match(/Kafka sink 127\.0\.0\.1:\d+: recovered after/g) ?? [];
      assert.ok(recoveries.length >= 2, "recovered from both outages, and said so");

      // The Kafka run commits to the end; both stop cleanly; nothing is left un-PUBACKed.
      const ends = await topicEnds(input, privateKafka);
      const deadline = Date.now() + 30_000;
      let committed = await committedOffsets(group, input, privateKafka);
      while ([...ends].some(([p, o]) => committed.get(p) !== o) && Date.now() < deadline) {
        await sleep(250);
        committed = await committedOffsets(group, input, privateKafka);
      }
      assert.deepEqual(committed, ends, "offsets committed up to the end");
    } finally {
      mqttRun.child.kill("SIGTERM");
      kafkaRun.child.kill("SIGTERM");
      const [a, b] = [await mqttRun.exit(), await kafkaRun.exit()];
      assert.equal(a, 0, mqttRun.stderr());
      assert.equal(b, 0, kafkaRun.stderr());
    }
    assert.equal(await queuedForSession(clientId), 0, "every MQTT event PUBACKed in the end");
  },
});

Deno.test({
  name: "--exactly-once through a broker restart mid-stream: a read_committed consumer sees each event's " +
    "prediction or dead letter exactly once",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await services("kafka-down").catch(() => {});
    await services("kafka-up");
    const input = uniqueName("eos-outage-in");
    const out = uniqueName("eos-outage-out");
    const dlq = uniqueName("eos-outage-dlq");
    const group = uniqueName("edgeinfer");
    const total = 4000;
    const bad = (i: number) => i % 100 === 7; // 40 undecodable events: dead letters
    const badCount = range(0, total).filter(bad).length;
    await createTopic(input, 2, privateKafka);
    await createTopic(out, 1, privateKafka);
    await createTopic(dlq, 1, privateKafka);
    await produce(
      input,
      range(0, total).map((i) => ({ key: `k${i % 5}`, value: bad(i) ? `not json ${i}` : json(i) })),
      privateKafka,
    );
    const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
    // The broker stops with a transaction open: the run retries it, or aborts it and reads its events
    // again; either way the read_committed output must hold each event's record once.
    const run = spawnCli([
      "run",
      "--model",
      model,
      "--source",
      `kafka://${BROKER}/${input}?group=${group}`,
      "--sink",
      `kafka://${BROKER}/${out}`,
      "--dlq",
      `kafka://${BROKER}/${dlq}`,
      "--exactly-once",
      "--batch-size",
      "4", // slow enough that the broker stops mid-stream, with a transaction open
      "--status-every",
      "0.2",
      "--retry-max-backoff",
      "2s",
    ]);
    let stopped = false;
    let code: number | undefined;
    try {
      await run.waitForStderr(/status: [1-9]\d* events acked/);
      const seen = run.stderr().length;
      await services("kafka-stop");
      stopped = true;
      const downAt = Date.now();
      // The fault bit: the run reports the outage (and had not acknowledged everything yet).
      await waitForNewStderr(run, seen, /status: \d+ events acked.*waiting for Kafka /);
      const during = run.stderr().slice(seen).match(/status: (\d+) events acked.*waiting for Kafka /)!;
      assert.ok(Number(during[1]) < total, `stopped mid-stream (${during[1]} of ${total} events acked)`);
      await sleep(Math.max(0, 12_000 - (Date.now() - downAt)));
      assertRunning(run, "Kafka → Kafka (exactly once)");
      await services("kafka-up");
      stopped = false;
      const upAt = Date.now();

      const ends = await topicEnds(input, privateKafka);
      const deadline = Date.now() + 90_000;
      let committed = await committedOffsets(group, input, privateKafka);
      while ([...ends].some(([p, o]) => committed.get(p) !== o) && Date.now() < deadline) {
        await sleep(250);
        committed = await committedOffsets(group, input, privateKafka);
      }
      assert.deepEqual(committed, ends, `offsets committed up to the end; stderr:\n${run.stderr()}`);
      console.log(
        `after a ${Math.round((upAt - downAt) / 1000)} s outage (${during[1]} of ${total} events acked ` +
          `before it): committed to the end ${Date.now() - upAt} ms after Kafka was up`,
      );
    } finally {
      // Leave the private Kafka up, as the next test expects.
      if (stopped) await services("kafka-up").catch(() => {});
      if (run.exited === undefined) run.child.kill("SIGTERM");
      code = await run.exit();
    }
    assert.equal(code, 0, run.stderr());
    assert.match(run.stderr(), /exactly once/);

    // Read well past the expected count: a duplicate would show up as an extra record.
    const predictions = await consume(out, total * 2, 6000, privateKafka);
    const ids = predictions.map((r) => JSON.parse(r.value).id as number);
    const counts = new Map<number, number>();
    for (const id of ids) counts.set(id, (counts.get(id) ?? 0) + 1);
    const twice = [...counts].filter(([, n]) => n > 1).map(([id]) => id);
    const missing = range(0, total).filter((i) => !bad(i) && !counts.has(i));
    const notes = run.stderr().split("\n").filter((l) => !/status:/.test(l)).join("\n");
    assert.equal(
      missing.length,
      0,
      `every good event predicted (missing e.g. ${missing.slice(0, 10)}):\n${notes}`,
    );
    assert.equal(
      twice.length,
      0,
      `and only once (duplicated e.g. ${twice.slice(0, 10)} of ${ids.length} predictions):\n${notes}`,
    );
    assert.equal(ids.length, total - badCount);
    const deadLetters = await consume(dlq, total, 4000, privateKafka);
    const deadIds = deadLetters.map((r) => Number(/^not json (\d+)$/.exec(JSON.parse(r.value).payload)?.[1]));
    assert.deepEqual(
      [...deadIds].sort((a, b) => a - b),
      range(0, total).filter(bad),
      `every bad event has exactly one dead letter:\n${notes}`,
    );
  },
});

Deno.test({
  name: "A sink topic that does not exist (auto-creation off) ends the run at once with one line, " +
    "even with an idle source",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
    const missing = uniqueName("no-such-topic");
    const started = Date.now();
    const run = spawnCli([
      "run",
      "--model",
      model,
      // A filter nobody publishes to: no event will ever arrive.
      "--source",
      `mqtt://${MQTT_HOSTPORT}/${uniqueName("idle")}/+?client-id=${uniqueName("edgeinfer-test")}`,
      "--sink",
      `kafka://${BROKER}/${missing}`,
    ]);
    assert.equal(await run.exit(), 1, run.stderr());
    const elapsed = Date.now() - started;
    assert.ok(elapsed < 20_000, `exited after ${elapsed} ms`);
    const errors = run.stderr().split("\n").filter((l) => l.startsWith("edgeinfer: error:"));
    assert.equal(errors.length, 1, run.stderr());
    assert.match(
      errors[0],
      new RegExp(
        `topic "${missing}" does not exist .*auto\\.create\\.topics\\.enable=false\\): create it first`,
      ),
    );
    assert.doesNotMatch(run.stderr(), /^\s+at /m, "no stack trace");
  },
});

Deno.test({
  name: "SIGTERM during a Kafka outage exits within --shutdown-timeout, acknowledging nothing",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await services("kafka-down"); // also the last test of the file: leave no private Kafka behind
    const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
    const base = uniqueName("sigterm-outage");
    const clientId = uniqueName("edgeinfer-test");
    await prepareMqttSession(clientId, `${base}/+`);
    await publishMqtt(`${base}/car`, range(0, 50).map(json));
    const run = spawnCli([
      "run",
      "--model",
      model,
      "--source",
      `mqtt://${MQTT_HOSTPORT}/${base}/+?client-id=${clientId}`,
      "--sink",
      `kafka://${BROKER}/${uniqueName("never")}`,
      "--status-every",
      "0.5",
      "--shutdown-timeout",
      "2s",
    ]);
    await run.waitForStderr(/status: 0 events acked.*waiting for Kafka sink/);
    const t0 = Date.now();
    run.child.kill("SIGTERM");
    assert.equal(await run.exit(), 0, run.stderr());
    const elapsed = Date.now() - t0;
    assert.ok(elapsed < 2000 + 6000, `exited ${elapsed} ms after SIGTERM`);
    assert.match(
      run.stderr(),
      /did not finish within --shutdown-timeout 2 s .*: 50 events left unacknowledged/,
    );
    assert.equal(await queuedForSession(clientId), 50, "none of the 50 events was PUBACKed");
  },
});
