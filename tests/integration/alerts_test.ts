/**
 * Alerts back to the device (--alerts): in server mode (devices connected to edgeinfer's mqtt-server://
 * endpoint, subscribed to their own alerts) and in broker mode (through Mosquitto, 127.0.0.1:1883).
 * The model is linear (score = speed) with threshold 100: speed 500 is an anomaly, speed 50 is not.
 *
 *   .tools/node_modules/.bin/deno test -A tests/integration/alerts_test.ts
 */
import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import mqtt, { type MqttClient } from "mqtt";
import { runCli, spawnCli } from "../cli/run_cli.ts";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { freePort, MQTT_HOSTPORT, MQTT_URL, publishMqtt, sleep, uniqueName, until } from "./brokers.ts";

const anomalyModel = () => linearModelFile({ features: ["speed"], weights: [1], bias: 0, threshold: 100 });

/** An MQTT 3.1.1 device logged in to the endpoint. */
function device(port: number, username: string, password: string): Promise<MqttClient> {
  return mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    username,
    password,
  });
}

/** The QoS the SUBACK grants, 128 for a refusal (which subscribeAsync would throw). */
function grantedQos(client: MqttClient, filter: string, qos: 0 | 1): Promise<number> {
  return new Promise((resolve) => {
    client.subscribe(filter, { qos }, (err, granted) => {
      const packet = (err as { packet?: { granted?: number[] } } | null)?.packet;
      resolve(packet?.granted?.[0] ?? granted?.[0]?.qos ?? 128);
    });
  });
}

Deno.test("alerts, server mode: a device subscribed to its own alerts gets its anomaly, not its normal reading; another device may not subscribe to them", async () => {
  const model = await anomalyModel();
  const port = freePort();
  const prefix = uniqueName("cars");
  const users = await Deno.makeTempFile();
  await Deno.writeTextFile(
    users,
    `car-1:${bcrypt.hashSync("pw-1", 4)}\ncar-2:${bcrypt.hashSync("pw-2", 4)}\n`,
  );
  const sink = await Deno.makeTempFile({ suffix: ".jsonl" });
  const run = spawnCli([
    "run",
    "--model",
    model,
    "--source",
    `mqtt-server://127.0.0.1:${port}/${prefix}/+/sensors?users=${users}&acl=${prefix}/{identity}/%23`,
    "--key-field",
    "car",
    "--sink",
    `file:${sink}`,
    "--alerts",
    `${prefix}/{key}/alerts`,
  ]);
  const clients: MqttClient[] = [];
  try {
    await run.waitForStderr(/listening on mqtt-server/);
    const car1 = await device(port, "car-1", "pw-1");
    const car2 = await device(port, "car-2", "pw-2");
    clients.push(car1, car2);
    const alerts: { at: number; value: { id: string; anomaly: boolean; score: number } }[] = [];
    car1.on(
      "message",
      (_topic, payload) => alerts.push({ at: Date.now(), value: JSON.parse(payload.toString()) }),
    );
    assert.notEqual(
      await grantedQos(car1, `${prefix}/car-1/alerts`, 1),
      128,
      "car-1 may read its own alerts",
    );
    assert.equal(
      await grantedQos(car2, `${prefix}/car-1/alerts`, 0),
      128,
      "car-2 may not read car-1's alerts",
    );
    assert.equal(await grantedQos(car2, `${prefix}/+/sensors`, 0), 128, "nor anyone's readings");

    await car1.publishAsync(
      `${prefix}/car-1/sensors`,
      JSON.stringify({ car: "car-1", id: "n1", speed: 50 }),
      {
        qos: 1,
      },
    );
    const sentAt = Date.now();
    await car1.publishAsync(
      `${prefix}/car-1/sensors`,
      JSON.stringify({ car: "car-1", id: "a1", speed: 500 }),
      {
        qos: 1,
      },
    );
    await until("car-1's alert", () => alerts.length >= 1);
    await sleep(200); // nothing else comes
    assert.deepEqual(alerts.map((a) => a.value.id), ["a1"], "the anomaly only, not the normal reading");
    assert.equal(alerts[0].value.anomaly, true);
    assert.equal(alerts[0].value.score, 500);
    assert.ok(alerts[0].at - sentAt < 2000, `alert within ${alerts[0].at - sentAt} ms`);
  } finally {
    for (const c of clients) await c.endAsync();
    run.child.kill("SIGTERM");
    await run.exit();
    await Deno.remove(users);
    await Deno.remove(sink);
  }
  assert.equal(run.exited, 0, run.stderr());
  assert.match(run.stderr(), /alerts: 1 published \(anomalies, QoS 0/);
  assert.match(
    run.stderr(),
    /refused device 'car-2'.*subscription to '.*\/car-1\/alerts', outside its rights/,
  );
});

Deno.test("alerts, broker mode: an anomaly's alert reaches a subscriber on Mosquitto; --alerts-on all sends every prediction", async (t) => {
  const model = await anomalyModel();
  for (const on of ["anomalies", "all"]) {
    await t.step(`--alerts-on ${on}`, async () => {
      const prefix = uniqueName("cars");
      const sink = await Deno.makeTempFile({ suffix: ".jsonl" });
      const watcher = await mqtt.connectAsync(MQTT_URL, { reconnectPeriod: 0 });
      const alerts: { topic: string; id: string }[] = [];
      watcher.on(
        "message",
        (topic, payload) => alerts.push({ topic, id: JSON.parse(payload.toString()).id }),
      );
      await watcher.subscribeAsync(`${prefix}/+/alerts`, { qos: 0 });
      const run = spawnCli([
        "run",
        "--model",
        model,
        "--source",
        `mqtt://${MQTT_HOSTPORT}/${prefix}/+/sensors?qos=1&client-id=${prefix}`,
        "--key-field",
        "car",
        "--sink",
        `file:${sink}`,
        "--alerts",
        `${prefix}/{key}/alerts`,
        "--alerts-on",
        on,
        "--log-level",
        "debug",
      ]);
      try {
        await run.waitForStderr(/subscribed to/);
        await run.waitForStderr(/alerts: connected to/);
        await publishMqtt(`${prefix}/car-7/sensors`, [
          JSON.stringify({ car: "car-7", id: "n1", speed: 50 }),
          JSON.stringify({ car: "car-7", id: "a1", speed: 500 }),
        ]);
        const expected = on === "all" ? ["n1", "a1"] : ["a1"];
        await until("the alerts", () => alerts.length >= expected.length);
        await sleep(200);
        assert.deepEqual(alerts.map((a) => a.id).sort(), [...expected].sort());
        assert.ok(alerts.every((a) => a.topic === `${prefix}/car-7/alerts`));
      } finally {
        await watcher.endAsync();
        run.child.kill("SIGTERM");
        assert.equal(await run.exit(), 0, run.stderr());
        await Deno.remove(sink);
      }
    });
  }
});

Deno.test("alerts: usage errors name the flag and the fix", async () => {
  const model = await anomalyModel();
  const cases: [string[], RegExp][] = [
    [
      ["--source", "-", "--alerts", "cars/{key}/alerts"],
      /--alerts publishes back over MQTT: it needs an mqtt:\/\//,
    ],
    [
      ["--source", "mqtt://127.0.0.1:1883/cars/#", "--alerts", "cars/{key}/alerts"],
      /--alerts cars\/\{key\}\/alerts lies within the --source filter 'cars\/#'/,
    ],
    [
      ["--source", "mqtt://127.0.0.1:1883/cars/+/s", "--alerts", "cars/+/alerts"],
      /must not hold the wildcards/,
    ],
    [
      ["--source", "mqtt://127.0.0.1:1883/cars/+/s", "--alerts-on", "all"],
      /--alerts-on needs --alerts TOPIC/,
    ],
    [
      ["--source", "mqtt://127.0.0.1:1883/cars/+/s", "--alerts", "a/{key}", "--alerts-on", "some"],
      /--alerts-on must be anomalies or all, got 'some'/,
    ],
  ];
  for (const [args, message] of cases) {
    const result = await runCli(["run", "--model", model, ...args]);
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, message);
  }
});
