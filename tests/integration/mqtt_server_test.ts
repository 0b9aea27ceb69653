/**
 * The MQTT server source (mqtt-server://): devices connect to edgeinfer itself. Source-level tests use
 * mqtt.js devices on a free loopback port; the end-to-end tests run edgeinfer with a Kafka sink
 * (127.0.0.1:9092) and publish with mosquitto_pub, a client we did not write.
 *
 *   .tools/node_modules/.bin/deno test -A tests/integration/mqtt_server_test.ts
 */
import assert from "node:assert/strict";
import bcrypt from "bcryptjs";
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { createMqttServerSource, type MqttServerSourceOptions } from "../../src/mqtt_server/source.ts";
import { bcryptLogin } from "../../src/mqtt_server/auth.ts";
import type { Source, SourceEvent } from "../../src/pipeline/types.ts";
import { FEATURES } from "../../src/sim/fleet.ts";
import { consume, freePort, KAFKA_BROKERS, sleep, topicEnds, uniqueName } from "./brokers.ts";
import { assertSeedScore, seedFixture, spawnCli } from "../cli/run_cli.ts";

/** A source on a free port that keeps every event it yields in `events`, until `stop()`. */
function startSource(overrides: Partial<MqttServerSourceOptions> = {}) {
  const port = freePort();
  const prefix = uniqueName("cars");
  const source: Source = createMqttServerSource({
    flag: "--source",
    host: "127.0.0.1",
    port,
    topicFilter: `${prefix}/+/sensors`,
    maxHeldEvents: 10_000,
    maxHeldBytes: 64 << 20,
    maxPayloadBytes: 1 << 20,
    keepOversizeBytes: 1024,
    ...overrides,
  });
  const events: SourceEvent[] = [];
  const ac = new AbortController();
  const running = (async () => {
    for await (const chunk of source.events(ac.signal)) events.push(...chunk);
  })();
  return {
    port,
    prefix,
    source,
    events,
    async stop() {
      ac.abort();
      await running;
      await source.close();
    },
  };
}

async function until(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** An MQTT 3.1.1 device connected to the source (rejects with the CONNACK refusal). */
async function device(port: number, options: IClientOptions = {}): Promise<MqttClient> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 5000,
    ...options,
  });
  await new Promise<void>((resolve, reject) => {
    const refused = (err: Error) => {
      client.end(true);
      reject(err);
    };
    client.once("error", refused);
    client.once("connect", () => {
      client.off("error", refused); // later errors (e.g. while reconnecting) are the test's business
      resolve();
    });
  });
  return client;
}

/** The first device of a test: retried until the source listens (it does once events() started). */
async function firstDevice(port: number, options: IClientOptions = {}): Promise<MqttClient> {
  for (let attempt = 1;; attempt++) {
    try {
      return await device(port, options);
    } catch (err) {
      if (attempt === 50 || !/ECONNREFUSED/.test(String(err))) throw err;
      await sleep(100);
    }
  }
}

Deno.test("mqtt-server: a QoS 1 publish is scored, and PUBACKed only when the event is acknowledged", async () => {
  const s = startSource({ login: undefined });
  try {
    // The source listens once events() started: retry the first connection until it does.
    const car = await firstDevice(s.port);
    let pubacked = 0;
    car.publish(`${s.prefix}/7/sensors`, '{"speed":1}', { qos: 1 }, () => pubacked++);
    car.publish(`${s.prefix}/8/sensors`, '{"speed":2}', { qos: 0 });
    await until("both events", () => s.events.length === 2);
    assert.equal(s.events[0].key, `${s.prefix}/7/sensors`);
    assert.equal(new TextDecoder().decode(s.events[1].payload), '{"speed":2}');
    await sleep(300); // the event is here: a PUBACK written on arrival would have arrived by now
    assert.equal(pubacked, 0, "no PUBACK before the event is acknowledged");
    s.events[0].ack();
    await until("the PUBACK", () => pubacked === 1);
    s.events[1].ack(); // QoS 0: nothing to write
    await car.endAsync();
  } finally {
    await s.stop();
  }
});

Deno.test("mqtt-server: a publish outside the filter or QoS 2 closes that connection only; others go on", async () => {
  const s = startSource();
  try {
    const good = await firstDevice(s.port);
    const bad = await device(s.port);
    const closed = new Promise<void>((resolve) => bad.once("close", () => resolve()));
    bad.publish(`${s.prefix}/7/engine`, "x", { qos: 1 });
    await closed;
    const bad2 = await device(s.port);
    const closed2 = new Promise<void>((resolve) => bad2.once("close", () => resolve()));
    bad2.publish(`${s.prefix}/7/sensors`, "x", { qos: 2 });
    await closed2;
    let acked = false;
    good.publish(`${s.prefix}/1/sensors`, "ok", { qos: 1 }, () => acked = true);
    await until("the good device's event", () => s.events.length === 1);
    assert.equal(new TextDecoder().decode(s.events[0].payload), "ok");
    s.events[0].ack();
    await until("its PUBACK", () => acked);
    bad.end(true);
    bad2.end(true);
    await good.endAsync();
  } finally {
    await s.stop();
  }
});

Deno.test("mqtt-server: with nothing acknowledged, the held events stay within the byte bound (sockets not read)", async () => {
  const payload = "x".repeat(1000);
  const s = startSource({ maxHeldBytes: 20_000 });
  const cars: MqttClient[] = [];
  try {
    cars.push(await firstDevice(s.port));
    for (let i = 1; i < 4; i++) cars.push(await device(s.port));
    let acked = 0;
    const perCar = 500;
    cars.forEach((car, c) => {
      for (let i = 0; i < perCar; i++) {
        car.publish(`${s.prefix}/${c}/sensors`, payload, { qos: 1 }, () => acked++);
      }
    });
    await until("the first events", () => s.events.length >= 20);
    // Let the devices push as much as they can; the count must settle near the bound.
    let last = -1;
    while (last !== s.events.length) {
      last = s.events.length;
      await sleep(500);
    }
    // 20 events reach the bound; each connection may add the rest of one socket read (<= 64 KiB here).
    console.log(
      `held ${s.events.length} events (${s.events.length} KB) of ${cars.length * perCar} published`,
    );
    assert.ok(s.events.length <= 20 + cars.length * 66, `held ${s.events.length} events`);
    assert.ok(s.events.length < cars.length * perCar);
    assert.equal(acked, 0);
    // Acknowledging lets everything through, and every device gets all its PUBACKs.
    while (acked < cars.length * perCar) {
      const taken = s.events.splice(0);
      for (const e of taken) e.ack();
      await sleep(20);
      if (taken.length === 0 && s.events.length === 0) await sleep(50);
    }
    assert.equal(acked, cars.length * perCar);
  } finally {
    for (const car of cars) car.end(true);
    await s.stop();
  }
});

Deno.test("mqtt-server: pause() stops reading the devices, resume() goes on", async () => {
  const s = startSource();
  try {
    const car = await firstDevice(s.port);
    car.publish(`${s.prefix}/1/sensors`, "first", { qos: 1 });
    await until("the first event", () => s.events.length === 1);
    s.source.pause();
    let acked = 0;
    car.publish(`${s.prefix}/1/sensors`, "while paused 1", { qos: 1 }, () => acked++);
    car.publish(`${s.prefix}/1/sensors`, "while paused 2", { qos: 1 }, () => acked++);
    await sleep(500);
    // At most the publish that arrived first is taken (then its callback is held); none is yielded.
    assert.equal(s.events.length, 1);
    s.source.resume();
    await until("the events published while paused", () => s.events.length === 3);
    for (const e of s.events) e.ack();
    await until("their PUBACKs", () => acked === 2);
    await car.endAsync();
  } finally {
    await s.stop();
  }
});

Deno.test("mqtt-server: a wrong password is refused, and a device may publish only under its own identity", async () => {
  const users = new Map([["car-1", bcrypt.hashSync("pw-1", 4)], ["car-2", bcrypt.hashSync("pw-2", 4)]]);
  const s = startSource({ login: bcryptLogin(users) });
  try {
    await assert.rejects(
      () => firstDevice(s.port, { username: "car-1", password: "wrong" }),
      /Bad username or password/i,
    );
    await assert.rejects(() => device(s.port), /Bad username or password|Not authorized/i);
    const car1 = await device(s.port, { username: "car-1", password: "pw-1" });
    let acked = false;
    car1.publish(`${s.prefix}/car-1/sensors`, "mine", { qos: 1 }, () => acked = true);
    await until("car-1's event", () => s.events.length === 1);
    s.events[0].ack();
    await until("its PUBACK", () => acked);
    await car1.endAsync();
  } finally {
    await s.stop();
  }
});

Deno.test("mqtt-server: acl= refuses a publish to another device's topic", async () => {
  const users = new Map([["car-1", bcrypt.hashSync("pw-1", 4)]]);
  const prefix = uniqueName("cars");
  const s = startSource({
    login: bcryptLogin(users),
    topicFilter: `${prefix}/+/sensors`,
    aclTemplate: `${prefix}/{identity}/#`,
  });
  try {
    const car1 = await firstDevice(s.port, { username: "car-1", password: "pw-1" });
    const closed = new Promise<void>((resolve) => car1.once("close", () => resolve()));
    car1.publish(`${prefix}/car-2/sensors`, "not mine", { qos: 1 });
    await closed;
    const again = await device(s.port, { username: "car-1", password: "pw-1" });
    let acked = false;
    again.publish(`${prefix}/car-1/sensors`, "mine", { qos: 1 }, () => acked = true);
    await until("car-1's own event", () => s.events.length === 1);
    assert.equal(s.events[0].key, `${prefix}/car-1/sensors`);
    s.events[0].ack();
    await until("its PUBACK", () => acked);
    car1.end(true);
    await again.endAsync();
  } finally {
    await s.stop();
  }
});

Deno.test("mqtt-server: a taken port ends the run with one line naming --source", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  try {
    const source = createMqttServerSource({
      flag: "--source",
      host: "127.0.0.1",
      port,
      topicFilter: "cars/+/sensors",
      maxHeldEvents: 10,
      maxHeldBytes: 1000,
      maxPayloadBytes: 1000,
      keepOversizeBytes: 100,
    });
    const it = source.events(new AbortController().signal)[Symbol.asyncIterator]();
    await assert.rejects(() => it.next(), (e: Error) => {
      assert.equal(e.name, "RuntimeError");
      assert.match(
        e.message,
        new RegExp(`^--source mqtt-server://127.0.0.1:${port}/cars/\\+/sensors: port ${port} is in use`),
      );
      return true;
    });
  } finally {
    listener.close();
  }
});

// ---- edgeinfer run, end to end on Kafka --------------------------------------------------------------

Deno.test("mqtt-server e2e: the seed messages published by mosquitto_pub arrive in Kafka with the reference scores", async (t) => {
  const seed = seedFixture();
  if (!seed) {
    console.warn("SKIPPED: ../shared/seed-ksql-udf is absent");
    return;
  }
  const port = freePort();
  const topic = uniqueName("mqtt-server-seed");
  const run = spawnCli([
    "run",
    "--model",
    seed.model,
    "--format",
    "delimited",
    "--source",
    `mqtt-server://127.0.0.1:${port}/ecg/+?allow-anonymous=true`,
    "--sink",
    `kafka://${KAFKA_BROKERS[0]}/${topic}`,
  ]);
  try {
    await run.waitForStderr(/listening on mqtt-server/);
    const pub = await new Deno.Command("mosquitto_pub", {
      args: ["-h", "127.0.0.1", "-p", String(port), "-V", "mqttv311", "-q", "1", "-t", "ecg/patient-1", "-l"],
      stdin: "piped",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const writer = pub.stdin.getWriter();
    await writer.write(new TextEncoder().encode(seed.lines.join("\n") + "\n"));
    await writer.close();
    const status = await pub.output();
    assert.equal(status.code, 0, new TextDecoder().decode(status.stderr));
    const records = await consume(topic, seed.lines.length, 60_000);
    assert.equal(records.length, seed.lines.length);
    await t.step("every prediction keyed by the topic, with the reference score", () => {
      for (const r of records) {
        assert.equal(r.key, "ecg/patient-1");
        const value = JSON.parse(r.value) as { id: string; score: number };
        assertSeedScore(value.score, seed.expected.get(value.id)!, `event ${value.id}`);
      }
    });
  } finally {
    run.child.kill("SIGTERM");
    await run.exit();
  }
});

Deno.test("mqtt-server e2e: SIGKILL mid-stream loses nothing: devices resend what was not PUBACKed", async () => {
  const port = freePort();
  const topic = uniqueName("mqtt-server-kill");
  const prefix = uniqueName("cars");
  const args = [
    "run",
    "--model",
    "models/car-anomaly.onnx",
    "--source",
    `mqtt-server://127.0.0.1:${port}/${prefix}/+/sensors?allow-anonymous=true`,
    "--sink",
    `kafka://${KAFKA_BROKERS[0]}/${topic}`,
  ];
  const perCar = 400;
  const carCount = 4;
  let run = spawnCli(args);
  const cars: MqttClient[] = [];
  try {
    await run.waitForStderr(/listening on mqtt-server/);
    for (let c = 0; c < carCount; c++) {
      cars.push(
        await device(port, { clientId: `${prefix}-${c}`, clean: false, reconnectPeriod: 200 }),
      );
    }
    let acked = 0;
    const publishing = (async () => {
      for (let i = 0; i < perCar; i++) {
        cars.forEach((car, c) => {
          // The car model keeps per-device state: each reading names its car and carries its time.
          const event = {
            id: `${c}-${i}`,
            car: `car-${c}`,
            ts: 1_735_689_600_000 + i * 1000,
            ...Object.fromEntries(FEATURES.map((f) => [f, 1])),
          };
          car.publish(`${prefix}/${c}/sensors`, JSON.stringify(event), { qos: 1 }, (err) => {
            if (!err) acked++;
          });
        });
        await sleep(5);
      }
    })();
    await until("some PUBACKs", () => acked >= 200, 30_000);
    // Published, not yet PUBACKed: what only the devices' resending can save.
    const unackedAtKill = cars.reduce((n, car) => n + Object.keys(car.outgoing).length, 0);
    run.child.kill("SIGKILL");
    await run.exit();
    assert.ok(unackedAtKill > 0 && acked < perCar * carCount, "killed mid-stream, with publishes in flight");
    run = spawnCli(args);
    await run.waitForStderr(/listening on mqtt-server/);
    await publishing;
    await until("every PUBACK", () => acked === perCar * carCount, 60_000);
    // Every PUBACK came after its prediction was durable: read the topic to its end (resent messages may
    // have been scored twice, so there can be more records than events).
    const end = [...(await topicEnds(topic)).values()].reduce((a, b) => a + b, 0);
    assert.ok(end >= perCar * carCount, `${end} records`);
    console.log(
      `${end} records for ${perCar * carCount} events (resent after the kill and scored twice: the rest)`,
    );
    const records = await consume(topic, end, 60_000);
    assert.equal(records.length, end);
    const ids = new Set(records.map((r) => (JSON.parse(r.value) as { id: string }).id));
    const missing: string[] = [];
    for (let c = 0; c < carCount; c++) {
      for (let i = 0; i < perCar; i++) if (!ids.has(`${c}-${i}`)) missing.push(`${c}-${i}`);
    }
    assert.deepEqual(missing, [], `${missing.length} events lost`);
  } finally {
    for (const car of cars) car.end(true);
    run.child.kill("SIGTERM");
    await run.exit();
  }
});

Deno.test("mqtt-server e2e: simulate --connections N: one connection per car, every event scored into Kafka", async () => {
  const port = freePort();
  const topic = uniqueName("mqtt-server-fleet");
  const prefix = uniqueName("cars");
  const run = spawnCli([
    "run",
    "--model",
    "models/car-anomaly.onnx",
    "--source",
    `mqtt-server://127.0.0.1:${port}/${prefix}/+/sensors?allow-anonymous=true`,
    "--sink",
    `kafka://${KAFKA_BROKERS[0]}/${topic}`,
  ]);
  try {
    await run.waitForStderr(/listening on mqtt-server/);
    const sim = spawnCli([
      "simulate",
      "--cars",
      "50",
      "--connections",
      "50",
      "--rate",
      "0",
      "--count",
      "1000",
      "--target",
      `mqtt://127.0.0.1:${port}/${prefix}/{car}/sensors`,
    ]);
    assert.equal(await sim.exit(), 0, sim.stderr());
    assert.match(sim.stderr(), /sent 1000 events to .* over 50 connections/);
    const records = await consume(topic, 1000, 60_000);
    assert.equal(records.length, 1000);
    assert.equal(new Set(records.map((r) => r.key)).size, 50);
  } finally {
    run.child.kill("SIGTERM");
    await run.exit();
  }
});

const TLS_DIR = "/tmp/edgeinfer-services/tls";

Deno.test("mqtts-server: devices with a certificate of the CA connect over TLS, the certificate's CN is the identity", async () => {
  let pem: (name: string) => string;
  try {
    Deno.statSync(`${TLS_DIR}/ca.pem`);
    pem = (name) => Deno.readTextFileSync(`${TLS_DIR}/${name}`);
  } catch {
    console.warn(`SKIPPED: ${TLS_DIR} is absent (scripts/services.sh up makes it)`);
    return;
  }
  const prefix = uniqueName("cars");
  const s = startSource({
    tls: { cert: pem("server.pem"), key: pem("server-key.pem"), ca: pem("ca.pem") },
    topicFilter: `${prefix}/+/sensors`,
    aclTemplate: `${prefix}/{identity}/#`,
  });
  const tls = { protocol: "mqtts" as const, ca: pem("ca.pem"), rejectUnauthorized: true };
  try {
    // The services' client certificate has CN=edgeinfer-client.
    const car = await firstDevice(s.port, { ...tls, cert: pem("client.pem"), key: pem("client-key.pem") });
    let acked = false;
    car.publish(`${prefix}/edgeinfer-client/sensors`, "mine", { qos: 1 }, () => acked = true);
    await until("its event", () => s.events.length === 1);
    s.events[0].ack();
    await until("its PUBACK", () => acked);
    const closed = new Promise<void>((resolve) => car.once("close", () => resolve()));
    car.publish(`${prefix}/car-2/sensors`, "not mine", { qos: 1 });
    await closed;
    car.end(true);
    // Without a client certificate the handshake fails.
    await assert.rejects(() => device(s.port, tls));
    assert.equal(s.events.length, 1);
  } finally {
    await s.stop();
  }
});
