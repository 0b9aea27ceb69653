/**
 * The connected-car demo (the body of `deno task demo`; scripts/demo.sh brings the services up first):
 *
 *   simulated fleet ──MQTT QoS 1──► Mosquitto ──► edgeinfer run (models/car-anomaly.onnx) ──► Kafka
 *   simulated fleet ──MQTT QoS 1, one connection per car──► edgeinfer run (mqtt-server://) ──► Kafka  (--direct)
 *
 * then reads every prediction back from Kafka and prints a summary: events in and out, anomalies,
 * precision/recall against the simulator's ground truth, end-to-end latency (event ts → the prediction's
 * Kafka timestamp: CreateTime, stamped by edgeinfer's sink as it builds the produce request; the record is
 * durable one acks=all round trip later) and throughput. Kafka is read with @platformatic/kafka.
 *
 *   deno run -A scripts/demo.ts [--cars 1000] [--duration 30] [--rate 3000] [--seed 2001] [--direct]
 *     [--scrape FILE]
 *
 * --scrape FILE: edgeinfer also serves its metrics (--http on a free loopback port); the demo scrapes
 * /metrics once a second and writes the last scrape before edgeinfer exits to FILE.
 *
 * The defaults are the "fleet shaped like the demo" of models/car-anomaly.md, so the summary's
 * precision and recall can be compared with the model card's.
 */
import { parseArgs } from "node:util";
import { Admin, Consumer, MessagesStreamModes, stringDeserializers } from "@platformatic/kafka";
import mqtt from "mqtt";

const { values } = parseArgs({
  options: {
    cars: { type: "string", default: "1000" },
    duration: { type: "string", default: "30" },
    rate: { type: "string", default: "3000" },
    seed: { type: "string", default: "2001" },
    model: { type: "string", default: "models/car-anomaly.onnx" },
    kafka: { type: "string", default: Deno.env.get("EDGEINFER_KAFKA_BROKERS") ?? "127.0.0.1:9092" },
    mqtt: {
      type: "string",
      default: (Deno.env.get("EDGEINFER_MQTT_URL") ?? "mqtt://127.0.0.1:1883").replace(/^mqtt:\/\//, ""),
    },
    scrape: { type: "string" },
    // The fleet connects straight to edgeinfer (its MQTT server source): no broker in between.
    direct: { type: "boolean", default: false },
    help: { type: "boolean", default: false },
  },
});
if (values.help) {
  console.log(
    "deno task demo [--cars 1000] [--duration 30] [--rate 3000] [--seed 2001] [--direct] [--scrape FILE] " +
      "(rate = events/s for the whole fleet; --direct: the cars connect to edgeinfer itself, one connection " +
      "each, no MQTT broker; --scrape: the last /metrics scrape of edgeinfer to FILE)",
  );
  Deno.exit(0);
}
for (const flag of ["cars", "duration", "rate", "seed"] as const) {
  if (!/^\d+$/.test(values[flag]!) || Number(values[flag]) < 1) {
    console.error(`demo: --${flag} must be a positive integer, got '${values[flag]}'`);
    Deno.exit(2);
  }
}
const cars = Number(values.cars);
const duration = Number(values.duration);
const rate = Number(values.rate);
const expected = rate * duration; // the simulator sends exactly rate x duration events
const tag = crypto.randomUUID().slice(0, 8);
const filter = `demo-${tag}/cars/+/sensors`;
const predictions = `car-predictions-${tag}`;
const deadLetters = `car-dead-letters-${tag}`;
const clientId = `edgeinfer-demo-${tag}`;
const say = (message: string) => console.error(`demo: ${message}`);

// 1. Topics.
const kafkaClient = { clientId: "edgeinfer-demo", bootstrapBrokers: values.kafka!.split(",") };
const admin = new Admin(kafkaClient);
await admin.createTopics({ topics: [predictions, deadLetters], partitions: 3, replicas: 1 });
await admin.close();

// 2. Where the fleet publishes. Through the broker: edgeinfer's persistent MQTT session exists before the
//    fleet starts, so nothing published while edgeinfer is still starting up is lost (the broker queues
//    it). Direct: edgeinfer listens on a free loopback port, and the fleet starts once it does.
let sourceUrl: string;
let fleetUrl: string;
if (values.direct) {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  sourceUrl = `mqtt-server://127.0.0.1:${port}/${filter}?allow-anonymous=true`;
  fleetUrl = `mqtt://127.0.0.1:${port}/demo-${tag}/cars/{car}/sensors?qos=1`;
} else {
  const session = await mqtt.connectAsync(`mqtt://${values.mqtt}`, {
    clientId,
    clean: false,
    protocolVersion: 5,
    properties: { sessionExpiryInterval: 3600 },
  });
  await session.subscribeAsync(filter, { qos: 1 });
  await session.endAsync();
  sourceUrl = `mqtt://${values.mqtt}/${filter}?qos=1&client-id=${clientId}`;
  fleetUrl = `mqtt://${values.mqtt}/demo-${tag}/cars/{car}/sensors?qos=1`;
}

say(
  `${cars} cars, ${rate} events/s for ${duration} s = ${expected} events over MQTT QoS 1` +
    (values.direct ? `, one connection per car, straight to edgeinfer (no broker)` : ""),
);
say(`edgeinfer: ${values.model} · ${sourceUrl.replace(/\?.*/, "")} → kafka://${values.kafka}/${predictions}`);

function start(args: string[], label: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts", ...args],
    stdin: "null",
    stdout: "inherit",
    stderr: "piped",
  }).spawn();
  // Pass the progress lines through, labelled.
  let text = "";
  const forwarded = (async () => {
    let carry = "";
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      const decoded = decoder.decode(chunk, { stream: true });
      text += decoded;
      const lines = (carry + decoded).split("\n");
      carry = lines.pop()!;
      for (const line of lines) console.error(`  [${label}] ${line.replace(/^edgeinfer: /, "")}`);
    }
  })();
  return { child, forwarded, stderrText: () => text };
}

/** A free loopback port for edgeinfer's --http (with --scrape). */
function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
const http = values.scrape === undefined ? undefined : `127.0.0.1:${freePort()}`;

const started = performance.now();
const run = start([
  "run",
  "--model",
  values.model!,
  "--source",
  sourceUrl,
  "--key-field",
  "car",
  "--passthrough",
  "failure_occurred,failure_modes,ts:event_ts",
  "--sink",
  `kafka://${values.kafka}/${predictions}`,
  "--dlq",
  `kafka://${values.kafka}/${deadLetters}`,
  "--max-events",
  String(expected),
  ...(http ? ["--http", http] : []),
], "run");
// --scrape: the last scrape taken while edgeinfer ran.
let lastScrape = "";
const scraper = http === undefined ? undefined : setInterval(() => {
  fetch(`http://${http}/metrics`).then((r) => r.text()).then((text) => lastScrape = text).catch(() => {});
}, 1000);
// Start the fleet once edgeinfer is subscribed (or listening), so latency measures the pipeline, not its
// start-up.
for (
  let waited = 0;
  !/mqtt: subscribed|mqtt-server: listening/.test(run.stderrText()) && waited < 30_000;
  waited += 50
) {
  await new Promise((r) => setTimeout(r, 50));
}
const sim = start([
  "simulate",
  "--cars",
  String(cars),
  "--rate",
  String(rate),
  "--duration",
  String(duration),
  "--seed",
  values.seed!,
  "--target",
  fleetUrl,
  ...(values.direct ? ["--connections", String(cars)] : []),
], "simulate");

const simStatus = await sim.child.status;
await sim.forwarded;
if (!simStatus.success) {
  say(`the simulator failed (exit ${simStatus.code})`);
  run.child.kill("SIGTERM");
  Deno.exit(1);
}
// edgeinfer stops by itself after --max-events; give it a bounded time to drain.
const drainTimer = setTimeout(() => {
  say("edgeinfer has not seen every event 60 s after the fleet stopped; stopping it");
  run.child.kill("SIGTERM");
}, 60_000);
const runStatus = await run.child.status;
clearTimeout(drainTimer);
clearInterval(scraper);
if (values.scrape !== undefined) {
  await Deno.writeTextFile(values.scrape, lastScrape);
  say(`the last /metrics scrape of edgeinfer is in ${values.scrape}`);
}
await run.forwarded;
const wall = (performance.now() - started) / 1000;

// 3. Read everything back from Kafka.
interface Prediction {
  key: string;
  anomaly: boolean;
  failure_occurred: boolean;
  failure_modes: string[];
  event_ts: number;
}
async function readAll(topic: string, count: number): Promise<{ value: string; appendedAt: number }[]> {
  const consumer = new Consumer({
    ...kafkaClient,
    groupId: `demo-reader-${tag}-${topic}`,
    deserializers: stringDeserializers,
    autocommit: false,
    maxWaitTime: 250,
  });
  const out: { value: string; appendedAt: number }[] = [];
  const stream = await consumer.consume({ topics: [topic], mode: MessagesStreamModes.EARLIEST });
  let lastArrival = Date.now();
  stream.on("data", (m) => {
    out.push({ value: m.value ?? "", appendedAt: Number(m.timestamp) });
    lastArrival = Date.now();
  });
  // Until all expected records are in, or nothing new came for 5 s.
  while (out.length < count && Date.now() - lastArrival < 5000) await new Promise((r) => setTimeout(r, 100));
  await stream.close();
  await consumer.close(true);
  return out;
}
const records = await readAll(predictions, expected);
const dead = await readAll(deadLetters, 0);

let tp = 0, fp = 0, fn = 0, tn = 0;
const modes = new Map<string, { events: number; flagged: number }>();
const latencies: number[] = [];
let firstAppend = Infinity, lastAppend = 0;
for (const { value, appendedAt } of records) {
  const p: Prediction = JSON.parse(value);
  if (p.anomaly && p.failure_occurred) tp++;
  else if (p.anomaly) fp++;
  else if (p.failure_occurred) fn++;
  else tn++;
  for (const mode of p.failure_modes) {
    const m = modes.get(mode) ?? { events: 0, flagged: 0 };
    m.events++;
    if (p.anomaly) m.flagged++;
    modes.set(mode, m);
  }
  latencies.push(appendedAt - p.event_ts);
  firstAppend = Math.min(firstAppend, appendedAt);
  lastAppend = Math.max(lastAppend, appendedAt);
}
latencies.sort((a, b) => a - b);
const pct = (q: number) =>
  latencies.length ? latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] : NaN;
const ratio = (a: number, b: number) => b === 0 ? "n/a" : (a / b).toFixed(3);
const precision = tp / (tp + fp), recall = tp / (tp + fn);

console.log(`
edgeinfer demo summary (${cars} cars, ${duration} s at ${rate} events/s)
  events in (published)     ${expected}
  events out (predictions)  ${records.length}${dead.length ? ` + ${dead.length} dead-lettered` : ""}   ${
  records.length + dead.length === expected ? "= in" : "≠ in  <-- MISMATCH"
}
  anomalies flagged         ${tp + fp} (${tp} true, ${fp} false; ${fn} failing events missed)
  precision / recall / F1   ${ratio(tp, tp + fp)} / ${ratio(tp, tp + fn)} / ${
  (2 * precision * recall / (precision + recall)).toFixed(3)
}   (ground truth: the simulator's failure_occurred)
  recall per failure mode   ${
  [...modes].map(([m, s]) => `${m} ${ratio(s.flagged, s.events)}`).join(", ") || "none"
}
  latency p50 / p99 / max   ${pct(0.5)} / ${pct(0.99)} / ${
  latencies.at(-1)
} ms   (event ts → prediction sent to Kafka)
  throughput                ${
  Math.round(records.length / Math.max((lastAppend - firstAppend) / 1000, 1e-3))
} predictions/s while the fleet ran; ${wall.toFixed(1)} s in all
  predictions topic         kafka://${values.kafka}/${predictions}`);

const ok = runStatus.success && records.length + dead.length === expected;
if (!ok) {
  say(`edgeinfer exit code ${runStatus.code}; events in ${expected}, out ${records.length + dead.length}`);
}
Deno.exit(ok ? 0 : 1);
