/**
 * Throughput of the MQTT source alone, QoS 1, PUBACKs deferred per batch (as the pipeline does).
 *
 *   .tools/node_modules/.bin/deno run -A scripts/bench_mqtt_source.ts \
 *     [--url mqtt://127.0.0.1:1883] [--count 50000] [--batch 256] [--linger-ms 5] \
 *     [--sink-delay-ms 1] [--protocol 5|4] [--mode queued|live]
 *
 * mode queued (default): the source's session is created, the source disconnects, a separate client
 *   publishes --count messages (the broker queues them), then the source reconnects and drains them:
 *   this measures the source, not the publisher.
 * mode live: the separate publisher client (same process) publishes while the source consumes.
 *
 * Batches: events are grouped into batches of --batch (or after --linger-ms); a batch is acked
 * --sink-delay-ms after it is full (a stand-in for inference + a durable sink write), without
 * blocking the consumption of the next batch. The broker needs max_queued_messages >= --count.
 */
import mqtt from "mqtt";
import { parseArgs } from "node:util";
import { createMqttSource } from "../src/mqtt/source.ts";
import type { SourceEvent } from "../src/pipeline/types.ts";

const { values } = parseArgs({
  options: {
    url: { type: "string", default: Deno.env.get("EDGEINFER_MQTT_URL") ?? "mqtt://127.0.0.1:1883" },
    count: { type: "string", default: "50000" },
    batch: { type: "string", default: "256" },
    "linger-ms": { type: "string", default: "5" },
    "sink-delay-ms": { type: "string", default: "1" },
    protocol: { type: "string", default: "5" },
    mode: { type: "string", default: "queued" },
  },
});
const url = values.url;
const count = Number(values.count);
const batchSize = Number(values.batch);
const lingerMs = Number(values["linger-ms"]);
const sinkDelayMs = Number(values["sink-delay-ms"]);
const protocolVersion = Number(values.protocol) as 4 | 5;
const live = values.mode === "live";

const run = crypto.randomUUID().slice(0, 8);
const topic = `bench/${run}/car-00042/sensors`;
const clientId = `bench-source-${run}`;
const makeSource = () =>
  createMqttSource({
    brokerUrl: url,
    topicFilter: `bench/${run}/+/sensors`,
    qos: 1,
    clientId,
    protocolVersion,
  });

/** ~470-byte JSON record, like the car simulator's. */
function payload(i: number): string {
  const r = (k: number) => ((i * 7919 + k * 104729) % 10000) / 100;
  const body = {
    id: `car-00042-${String(i).padStart(9, "0")}`,
    device: "car-00042",
    ts: 1795666998123 + i * 10,
    speed_kmh: r(1),
    rpm: 800 + r(2) * 50,
    throttle_pct: r(3),
    engine_temp_c: 70 + r(4) / 4,
    oil_pressure_kpa: 200 + r(5),
    coolant_temp_c: 80 + r(6) / 5,
    battery_v: 12 + r(7) / 50,
    fuel_level_pct: r(8),
    tire_fl_kpa: 220 + r(9) / 4,
    tire_fr_kpa: 220 + r(10) / 4,
    tire_rl_kpa: 220 + r(11) / 4,
    tire_rr_kpa: 220 + r(12) / 4,
    accel_x_g: r(13) / 100 - 0.5,
    accel_y_g: r(14) / 100 - 0.5,
    accel_z_g: 1 + r(15) / 1000,
    intake_air_c: 20 + r(16) / 5,
    maf_gs: r(17) / 2,
    lat: 48.1 + r(18) / 1000,
    lon: 11.5 + r(19) / 1000,
  };
  return JSON.stringify(body);
}

async function publishAll(): Promise<number> {
  const pub = await mqtt.connectAsync(url, { clientId: `bench-pub-${run}` });
  const t0 = performance.now();
  let done = 0;
  await new Promise<void>((resolve, reject) => {
    const window = 1000; // keep a bounded number of unacked publishes
    let next = 0;
    const pump = () => {
      while (next < count && next - done < window) {
        pub.publish(topic, payload(next++), { qos: 1 }, (err) => {
          if (err) return reject(err);
          if (++done === count) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  const seconds = (performance.now() - t0) / 1000;
  await pub.endAsync();
  return seconds;
}

console.log(`payload bytes: ${new TextEncoder().encode(payload(1)).length}`);

if (!live) {
  // Create the persistent session (subscription), then leave so the broker queues for us.
  const setup = makeSource();
  const ac = new AbortController();
  const it = setup.events(ac.signal)[Symbol.asyncIterator]();
  const first = it.next();
  await new Promise((r) => setTimeout(r, 300)); // CONNACK + SUBACK on loopback
  ac.abort();
  await first;
  await setup.close();
  const pubSeconds = await publishAll();
  console.log(
    `published ${count} (QoS 1) in ${pubSeconds.toFixed(2)} s -> ${Math.round(count / pubSeconds)} msg/s`,
  );
}

const source = makeSource();
const ac = new AbortController();
let received = 0;
let acked = 0;
let maxOutstanding = 0;
let chunks = 0;
let t0 = 0;
let batch: SourceEvent[] = [];
let linger: ReturnType<typeof setTimeout> | undefined;
let finished: () => void;
const allAcked = new Promise<void>((r) => finished = r);

const flush = () => {
  clearTimeout(linger);
  linger = undefined;
  const b = batch;
  batch = [];
  setTimeout(() => {
    for (const e of b) e.ack();
    acked += b.length;
    if (acked === count) finished();
  }, sinkDelayMs);
};

const consume = (async () => {
  for await (const chunk of source.events(ac.signal)) {
    if (received === 0) t0 = performance.now();
    chunks++;
    received += chunk.length;
    maxOutstanding = Math.max(maxOutstanding, received - acked);
    for (const e of chunk) {
      batch.push(e);
      if (batch.length === batchSize) flush();
    }
    if (batch.length > 0 && linger === undefined) linger = setTimeout(flush, lingerMs);
  }
})();

const publishing = live ? publishAll() : Promise.resolve(0);
await allAcked;
const seconds = (performance.now() - t0) / 1000;
ac.abort();
await consume;
await source.close();
await publishing;
// Leave no persistent session behind on the broker.
await (await mqtt.connectAsync(url, { clientId, protocolVersion, clean: true, reconnectPeriod: 0 }))
  .endAsync();
console.log(
  `source (MQTT ${protocolVersion === 5 ? "5" : "3.1.1"}, ${live ? "live" : "queued"}): ${count} events ` +
    `received+acked in ${seconds.toFixed(2)} s -> ${Math.round(count / seconds)} msg/s; ` +
    `${chunks} chunks (avg ${(count / chunks).toFixed(1)} events), max un-acked ${maxOutstanding}`,
);
