/**
 * Throughput of `edgeinfer run` end to end, per source → sink and batch size, in one run so the
 * figures can be compared as ratios. Needs the services (scripts/services.sh up).
 *
 *   deno run -A scripts/bench.ts [--model PATH] [--events N] [--batch-sizes 1,256]
 *   deno run -A main.ts simulate --count 50000 --rate 0 --quiet --target file:/tmp/cars.jsonl
 *   deno run -A scripts/bench.ts --model models/car-anomaly.onnx --format json --messages /tmp/cars.jsonl
 *
 * Default model: the seed KSQL UDF autoencoder in ../shared (210 features, delimited payloads);
 * events are its 23 test messages repeated (any file of events cycles the same way). Rates come from edgeinfer's own summary: events
 * acknowledged per second from the first event to the last ack (connect time excluded).
 * MQTT: the messages are queued in a persistent session first, so the figure is edgeinfer's
 * drain rate at QoS 1, not the publisher's.
 */
import { parseArgs } from "node:util";
import { Kafka, logLevel } from "kafkajs";
import { patchKafkajsIdlePolling } from "../src/kafka/client.ts";
import mqtt from "mqtt";

// kafkajs 2.2.4 re-arms a negative-delay timer after every response (see src/kafka/client.ts).
patchKafkajsIdlePolling();

const { values } = parseArgs({
  options: {
    model: { type: "string", default: "../shared/seed-ksql-udf/ecg-autoencoder.onnx" },
    messages: { type: "string", default: "../shared/seed-ksql-udf/ecg_discord_test.msgs" },
    format: { type: "string", default: "delimited" },
    events: { type: "string", default: "50000" },
    "batch-sizes": { type: "string", default: "1,256" },
    scenarios: { type: "string", default: "file,kafka,mqtt" },
    kafka: { type: "string", default: "127.0.0.1:9092" },
    mqtt: { type: "string", default: "127.0.0.1:1883" },
  },
});
const total = Number(values.events);
const seedLines = (await Deno.readTextFile(values.messages!)).split("\n").filter((l) => l.trim() !== "");
// Delimited events get unique ids; JSON events are used as they are.
const lines = Array.from({ length: total }, (_, i) => {
  const line = seedLines[i % seedLines.length];
  return values.format === "delimited" ? line.replace(/^[^,]*/, String(i)) : line;
});
const kafka = new Kafka({
  clientId: "edgeinfer-bench",
  brokers: [values.kafka!],
  logLevel: logLevel.NOTHING,
});
const tag = crypto.randomUUID().slice(0, 6);

async function edgeinfer(args: string[]): Promise<number> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "main.ts", "run", "--model", values.model!, "--format", values.format!, ...args],
    stdout: "null",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  const rate = /done: \d+ events acked \((\d+)\/s\)/.exec(stderr)?.[1];
  if (out.code !== 0 || rate === undefined) throw new Error(`edgeinfer failed:\n${stderr}`);
  // A rate of events that were rejected instead of scored would measure the wrong thing.
  if (!/ 0 dead-lettered/.test(stderr)) throw new Error(`events were rejected:\n${stderr}`);
  return Number(rate);
}

async function fileScenario(batch: number): Promise<number> {
  const path = await Deno.makeTempFile({ suffix: ".msgs" });
  await Deno.writeTextFile(path, lines.join("\n") + "\n");
  return edgeinfer(["--source", `file:${path}`, "--sink", "-", "--batch-size", String(batch)]);
}

async function kafkaScenario(batch: number, n: number): Promise<number> {
  const input = `bench-in-${tag}-${batch}`;
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic: input, numPartitions: 1 }], waitForLeaders: true });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  for (let i = 0; i < n; i += 500) {
    await producer.send({
      topic: input,
      messages: lines.slice(i, Math.min(n, i + 500)).map((value) => ({ value })),
    });
  }
  await producer.disconnect();
  return edgeinfer([
    "--source",
    `kafka://${values.kafka}/${input}?group=bench-${tag}-${batch}`,
    "--sink",
    `kafka://${values.kafka}/bench-out-${tag}-${batch}`,
    "--batch-size",
    String(batch),
    "--max-events",
    String(n),
  ]);
}

async function mqttScenario(batch: number, n: number): Promise<number> {
  const topic = `bench/${tag}/${batch}`;
  const clientId = `edgeinfer-bench-${tag}-${batch}`;
  const session = await mqtt.connectAsync(`mqtt://${values.mqtt}`, {
    clientId,
    clean: false,
    protocolVersion: 5,
    properties: { sessionExpiryInterval: 600 },
  });
  await session.subscribeAsync(topic, { qos: 1 });
  await session.endAsync();
  const publisher = await mqtt.connectAsync(`mqtt://${values.mqtt}`);
  for (let i = 0; i < n; i += 1000) {
    await Promise.all(
      lines.slice(i, Math.min(n, i + 1000)).map((l) => publisher.publishAsync(topic, l, { qos: 1 })),
    );
  }
  await publisher.endAsync();
  return edgeinfer([
    "--source",
    `mqtt://${values.mqtt}/${topic}?qos=1&client-id=${clientId}`,
    "--sink",
    `kafka://${values.kafka}/bench-mqtt-out-${tag}-${batch}`,
    "--batch-size",
    String(batch),
    "--max-events",
    String(n),
  ]);
}

const batchSizes = values["batch-sizes"]!.split(",").map(Number);
const scenarios = values.scenarios!.split(",");
console.log(`model ${values.model}; ${total} events (batch 1 on brokers: ${Math.min(total, 5000)})`);
console.log("scenario            batch   events/s");
for (const scenario of scenarios) {
  for (const batch of batchSizes) {
    // Batch 1 over a broker costs one acks=all round trip per event: fewer events keep it short.
    const n = batch === 1 ? Math.min(total, 5000) : total;
    const rate = scenario === "file"
      ? await fileScenario(batch)
      : scenario === "kafka"
      ? await kafkaScenario(batch, n)
      : await mqttScenario(batch, n);
    const name = { file: "file → stdout", kafka: "Kafka → Kafka", mqtt: "MQTT → Kafka (QoS 1)" }[scenario];
    console.log(`${name!.padEnd(20)}${String(batch).padStart(5)} ${String(rate).padStart(10)}`);
  }
}
