/**
 * `edgeinfer simulate` publishing to real brokers (scripts/services.sh up: Mosquitto on
 * 127.0.0.1:1883, Kafka on 127.0.0.1:9092, or EDGEINFER_MQTT_URL / EDGEINFER_KAFKA_BROKERS).
 * Each test uses its own topics, so the brokers can be shared.
 *
 *   .tools/node_modules/.bin/deno test -A tests/integration/sim_targets_test.ts
 */
import assert from "node:assert/strict";
import mqtt from "mqtt";
import { parseSimulateArgs, runSimulation } from "../../src/cli/simulate.ts";
import { openTarget } from "../../src/sim/targets.ts";
import { consume, createTopic, KAFKA_BROKERS, MQTT_HOSTPORT, MQTT_URL, uniqueName } from "./brokers.ts";

Deno.test("simulate publishes every event to MQTT at QoS 1 on the per-car topic", async () => {
  const prefix = uniqueName("edgeinfer-sim-test");
  const cars = 20, count = 2000;
  const subscriber = await mqtt.connectAsync(MQTT_URL, { reconnectPeriod: 0 });
  const received: { topic: string; event: { car: string } }[] = [];
  let done: () => void;
  const all = new Promise<void>((resolve) => done = resolve);
  subscriber.on("message", (topic, payload) => {
    received.push({ topic, event: JSON.parse(payload.toString()) });
    if (received.length === count) done();
  });
  await subscriber.subscribeAsync(`${prefix}/+/sensors`, { qos: 1 });
  try {
    const opts = parseSimulateArgs([
      ...["--cars", String(cars), "--count", String(count), "--rate", "0", "--quiet"],
      ...["--target", `mqtt://${MQTT_HOSTPORT}/${prefix}/{car}/sensors?qos=1`],
    ]);
    await runSimulation(opts, await openTarget(opts.target));
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([all, new Promise((resolve) => timer = setTimeout(resolve, 20_000))]);
    clearTimeout(timer);
    assert.equal(received.length, count);
    for (const { topic, event } of received) assert.equal(topic, `${prefix}/${event.car}/sensors`);
    assert.equal(new Set(received.map((r) => r.event.car)).size, cars);
  } finally {
    await subscriber.endAsync();
  }
});

Deno.test("simulate writes to Kafka keyed by car", async () => {
  const topic = uniqueName("edgeinfer-sim-test");
  await createTopic(topic, 3);
  const count = 600;
  const opts = parseSimulateArgs([
    ...["--cars", "30", "--count", String(count), "--rate", "0", "--quiet"],
    ...["--target", `kafka://${KAFKA_BROKERS.join(",")}/${topic}`],
  ]);
  await runSimulation(opts, await openTarget(opts.target));
  const records = await consume(topic, count);
  assert.equal(records.length, count);
  const partitionOf = new Map<string, number>();
  for (const r of records) {
    const event = JSON.parse(r.value);
    assert.equal(r.key, event.car);
    // One car, one partition: its readings stay in order.
    assert.equal(partitionOf.get(r.key!) ?? r.partition, r.partition);
    partitionOf.set(r.key!, r.partition);
  }
});
