/**
 * The MQTT sink (`--sink mqtt://…/<topic template>`): on Mosquitto (127.0.0.1:1883), and on an in-process
 * aedes broker started late, to see that send() resolves only once the broker has PUBACKed.
 *
 *   .tools/node_modules/.bin/deno test -A tests/integration/mqtt_sink_test.ts
 */
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { Aedes } from "aedes";
import mqtt from "mqtt";
import { createMqttSink } from "../../src/mqtt/sink.ts";
import { TopicTemplate } from "../../src/mqtt/topic_template.ts";
import { Health } from "../../src/pipeline/health.ts";
import { runCli } from "../cli/run_cli.ts";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { freePort, MQTT_HOSTPORT, MQTT_URL, sleep, uniqueName, until } from "./brokers.ts";

Deno.test("mqtt sink e2e: file → mqtt:// on Mosquitto: every prediction on its key's topic, in order; a key with '#' is dead-lettered", async () => {
  const model = await linearModelFile({ features: ["speed"], weights: [1], bias: 0, threshold: 100 });
  const prefix = uniqueName("sink");
  const cars = ["car-1", "car-2", "car-3"];
  const lines: string[] = [];
  for (let i = 0; i < 600; i++) lines.push(JSON.stringify({ car: cars[i % 3], id: String(i), speed: i }));
  lines.splice(300, 0, JSON.stringify({ car: "bad#car", id: "bad", speed: 1 }));
  const input = await Deno.makeTempFile({ suffix: ".jsonl" });
  const dlq = await Deno.makeTempFile({ suffix: ".jsonl" });
  await Deno.writeTextFile(input, lines.join("\n") + "\n");

  const reader = await mqtt.connectAsync(MQTT_URL, { reconnectPeriod: 0 });
  const received: { topic: string; value: { key: string; id: string; score: number } }[] = [];
  reader.on("message", (topic, payload) => received.push({ topic, value: JSON.parse(payload.toString()) }));
  await reader.subscribeAsync(`${prefix}/+/predictions`, { qos: 1 });
  try {
    const result = await runCli([
      "run",
      "--model",
      model,
      "--source",
      `file:${input}`,
      "--key-field",
      "car",
      "--batch-size",
      "64",
      "--sink",
      `mqtt://${MQTT_HOSTPORT}/${prefix}/{key}/predictions`,
      "--dlq",
      `file:${dlq}`,
    ]);
    assert.equal(result.code, 0, result.stderr);
    await until("600 predictions", () => received.length >= 600);
    await sleep(200); // nothing beyond them
    assert.equal(received.length, 600);
    for (const car of cars) {
      const mine = received.filter((r) => r.topic === `${prefix}/${car}/predictions`);
      assert.equal(mine.length, 200, car);
      assert.ok(mine.every((r) => r.value.key === car));
      const ids = mine.map((r) => Number(r.value.id));
      assert.deepEqual(ids, [...ids].sort((a, b) => a - b), `${car}'s predictions in order`);
    }
    const dead = (await Deno.readTextFile(dlq)).trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(dead.length, 1);
    assert.match(dead[0].error, /the sink refused the prediction: its key "bad#car" holds an MQTT wildcard/);
  } finally {
    await reader.endAsync();
    await Deno.remove(input);
    await Deno.remove(dlq);
  }
});

Deno.test("mqtt sink: send() resolves only once the broker has PUBACKed; an outage is reported and ridden out", async () => {
  const port = freePort();
  const waits: string[] = [];
  const health = new Health(undefined, (message) => waits.push(message));
  const sink = createMqttSink({
    flag: "--sink",
    brokerUrl: `mqtt://127.0.0.1:${port}`,
    topic: new TopicTemplate("late/{key}", "--sink"),
    clientId: uniqueName("sink"),
    protocolVersion: 4,
    keepaliveSeconds: 15,
    health,
  });
  const records = Array.from(
    { length: 20 },
    (_, i) => ({ key: `k${i % 2}`, value: `{"n":${i}}`, headers: {} }),
  );
  let resolved = false;
  const sent = sink.send(records).then((refused) => {
    resolved = true;
    return refused;
  });
  // No broker yet: the outage is reported (a positive signal), and the batch is not durable.
  await until(
    "the outage reported",
    () => waits.some((m) => /MQTT sink .*retrying until it recovers/.test(m)),
  );
  assert.equal(resolved, false);

  const broker = await Aedes.createBroker();
  const published: string[] = [];
  broker.on("publish", (packet, client) => {
    if (client) published.push(packet.payload.toString());
  });
  const server = createServer(broker.handle);
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  try {
    assert.deepEqual(await sent, []);
    assert.deepEqual(published, records.map((r) => r.value), "every record, in order");
    await until("the recovery reported", () => waits.some((m) => /MQTT sink .*recovered after/.test(m)));
    await sink.close();
  } finally {
    server.close();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
  }
});

Deno.test("mqtt sink: a refused login ends the run with one line", async () => {
  const model = await linearModelFile({ features: ["speed"], weights: [1], bias: 0 });
  const port = freePort();
  const broker = await Aedes.createBroker({
    authenticate: (_client, _user, _password, done) => {
      const err = Object.assign(new Error("bad user name or password"), { returnCode: 4 as const });
      done(err, null);
    },
  });
  const server = createServer(broker.handle);
  await new Promise<void>((resolve) => server.listen(port, "127.0.0.1", resolve));
  try {
    const result = await runCli([
      "run",
      "--model",
      model,
      "--source",
      "-",
      "--sink",
      `mqtt://127.0.0.1:${port}/out/all?username=edge&version=4`,
    ], { stdin: '{"speed":1}\n', env: { EDGEINFER_MQTT_PASSWORD: "wrong" } });
    assert.equal(result.code, 1, result.stderr);
    assert.match(result.stderr, /--sink: MQTT broker mqtt:\/\/127\.0\.0\.1:\d+ refused the connection/);
    assert.doesNotMatch(result.stderr, /wrong/);
  } finally {
    server.close();
    await new Promise<void>((resolve) => broker.close(() => resolve()));
  }
});
