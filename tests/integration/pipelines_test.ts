/**
 * Several pipelines in one process (`pipelines:` in a config file), against the real Mosquitto and Kafka:
 * MQTT → Kafka with the car model and Kafka → Kafka with another model, each with its own sinks.
 */
import assert from "node:assert/strict";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { runCli, spawnCli } from "../cli/run_cli.ts";
import {
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
} from "./brokers.ts";

const KAFKA = KAFKA_BROKERS.join(",");

async function recordsIn(topic: string): Promise<number> {
  return [...(await topicEnds(topic)).values()].reduce((sum, end) => sum + end, 0);
}

Deno.test("pipelines: two pipelines in one process score their own events with their own model; SIGTERM drains both", async () => {
  const prefix = uniqueName("fleet");
  const clientId = uniqueName("edgeinfer-cars");
  const carsOut = uniqueName("car-predictions");
  const pumpsIn = uniqueName("pumps-in");
  const pumpsOut = uniqueName("pump-predictions");
  const pumpsDlq = uniqueName("pump-dead-letters");
  const pumpsModel = await linearModelFile({ features: ["a", "b"], weights: [1, 2], bias: 0, name: "pumps" });

  // Car events from the simulator, each given an id; half are queued in the session before the start.
  const simulated = await runCli([
    "simulate",
    "--cars",
    "4",
    "--count",
    "120",
    "--seed",
    "3",
    "--rate",
    "0",
    "--target",
    "-",
  ]);
  assert.equal(simulated.code, 0, simulated.stderr);
  const cars = simulated.stdout.trim().split("\n").map((line, id) => ({ ...JSON.parse(line), id }));
  assert.equal(cars.length, 120);
  const publishCars = (events: typeof cars) =>
    Promise.all(
      [...new Set(events.map((e) => e.car))].map((car) =>
        publishMqtt(
          `${prefix}/${car}/sensors`,
          events.filter((e) => e.car === car).map((e) => JSON.stringify(e)),
        )
      ),
    );
  await prepareMqttSession(clientId, `${prefix}/+/sensors`);
  await publishCars(cars.slice(0, 60));
  await createTopic(pumpsIn, 2);
  const pumps = Array.from({ length: 50 }, (_, id) => ({ id, pump: `p-${id % 3}`, a: id, b: 1 }));
  await produce(pumpsIn, [
    ...pumps.map((p) => ({ key: p.pump, value: JSON.stringify(p) })),
    { key: "p-0", value: "{broken" },
  ]);

  const dir = await Deno.makeTempDir();
  const config = `${dir}/edge.yaml`;
  await Deno.writeTextFile(
    config,
    [
      "status-every: 0.5",
      `sink: kafka://${KAFKA}/${carsOut}`,
      "batch-size: 16",
      "pipelines:",
      "  cars:",
      "    model: models/car-anomaly.onnx",
      `    source: mqtt://${MQTT_HOSTPORT}/${prefix}/+/sensors?qos=1&client-id=${clientId}`,
      "    key-field: car",
      "  pumps:",
      `    model: ${pumpsModel}`,
      `    source: kafka://${KAFKA}/${pumpsIn}?group=${uniqueName("edgeinfer")}`,
      `    sink: kafka://${KAFKA}/${pumpsOut}`,
      `    dlq: kafka://${KAFKA}/${pumpsDlq}`,
      "    key-field: pump",
      "    batch-size: 8",
    ].join("\n"),
  );
  const check = await runCli(["config", "check", config]);
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, /pipelines:\n {2}cars:\n {4}model: models\/car-anomaly\.onnx\n/);
  assert.match(check.stdout, new RegExp(`\n {2}pumps:\n(.*\n)* {4}sink: kafka://${KAFKA}/${pumpsOut}\n`));

  const run = spawnCli(["run", "--config", config]);
  try {
    await run.waitForStderr(/\[cars\] model car-anomaly/);
    await run.waitForStderr(/\[pumps\] model pumps/);
    // The MQTT source's own lines carry its pipeline's name too.
    await run.waitForStderr(/\[cars\] mqtt: subscribed to /);
    await publishCars(cars.slice(60));
    // Each pipeline's status line names it; every event is acknowledged (its record durable) before the
    // records are read and before the signal.
    await run.waitForStderr(/\[cars\] status: 120 events acked/);
    await run.waitForStderr(/\[pumps\] status: 51 events acked/);

    const carRecords = (await consume(carsOut, 120)).map((r) => ({ key: r.key, ...JSON.parse(r.value) }));
    assert.equal(carRecords.length, 120, run.stderr());
    assert.deepEqual(carRecords.map((r) => r.id).sort((a, b) => a - b), cars.map((c) => c.id));
    for (const r of carRecords) {
      assert.equal(r.model.name, "car-anomaly", "scored by the cars pipeline's model");
      assert.equal(r.key, cars[r.id].car);
    }
    const pumpRecords = (await consume(pumpsOut, 50)).map((r) => JSON.parse(r.value));
    assert.equal(pumpRecords.length, 50, run.stderr());
    for (const r of pumpRecords) {
      assert.equal(r.model.name, "pumps", "scored by the pumps pipeline's model");
      assert.equal(r.score, r.id + 2);
    }
    const deadLetters = await consume(pumpsDlq, 1);
    assert.equal(deadLetters.length, 1);

    run.child.kill("SIGTERM");
    assert.equal(await run.exit(), 0, run.stderr());
  } finally {
    if (run.exited === undefined) run.child.kill("SIGKILL");
    await run.exit();
  }
  const stderr = run.stderr();
  assert.match(stderr, /stopping: flushing in-flight batches/);
  assert.match(stderr, /\[cars\] done: 120 events acked .* 120 predictions/);
  assert.match(stderr, /\[pumps\] done: 51 events acked .* 50 predictions, \d+ anomalies, 1 dead-lettered/);
  // Nothing went to the other pipeline's topics (read after every record arrived and both were done).
  assert.equal(await recordsIn(carsOut), 120);
  assert.equal(await recordsIn(pumpsOut), 50);
  assert.equal(await queuedForSession(clientId), 0, "every car event was PUBACKed");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("pipelines: a pipeline failing for good ends the run (the other drained, exit 1), naming it", async () => {
  const dir = await Deno.makeTempDir();
  const model = await linearModelFile({ features: ["a", "b"], weights: [1, 1], bias: 0 });
  await Deno.writeTextFile(
    `${dir}/edge.yaml`,
    [
      `model: ${model}`,
      "pipelines:",
      // Healthy, and runs until stopped.
      "  live:",
      `    source: mqtt://${MQTT_HOSTPORT}/${uniqueName("idle")}/#?qos=1&client-id=${uniqueName("live")}`,
      // Its broker is unreachable, and it gives up after 1 s: a fatal failure.
      "  broken:",
      "    source: mqtt://127.0.0.1:1/x/#",
      "    give-up-after: 1s",
    ].join("\n"),
  );
  const run = spawnCli(["run", "--config", `${dir}/edge.yaml`]);
  const started = Date.now();
  assert.equal(await run.exit(), 1, run.stderr());
  assert.ok(Date.now() - started < 20_000, "ended promptly");
  const stderr = run.stderr();
  // The outage is reported for the broken pipeline only.
  assert.match(stderr, /\[broken\] MQTT source mqtt:\/\/127\.0\.0\.1:1: .*retrying until it recovers/);
  assert.doesNotMatch(stderr, /\[live\] MQTT source/);
  assert.match(stderr, /\[broken\] failed: stopping every pipeline/);
  assert.match(stderr, /\[live\] done: 0 events acked/);
  assert.match(
    stderr,
    /error: pipeline broken: MQTT source mqtt:\/\/127\.0\.0\.1:1: gave up after .* \(--give-up-after\)/,
  );
  await Deno.remove(dir, { recursive: true });
});
