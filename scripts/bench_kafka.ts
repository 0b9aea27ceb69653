/**
 * Throughput of the Kafka source and sink against a real broker (scripts/services.sh up).
 *
 *   .tools/node_modules/.bin/deno run -A scripts/bench_kafka.ts [--messages 200000] [--batch 256]
 *       [--partitions 3] [--in-flight 4] [--compression zstd] [--brokers 127.0.0.1:9092]
 *
 * Only the product's source and sink are measured; the topics, the pre-filled input and the committed
 * offsets are made and read with plain @platformatic/kafka clients (Admin, Producer) outside the timings.
 *
 * source: consume and ack N small messages (pre-produced), from the first event to the last;
 *         then close() (final commit), checked against the group's committed offsets.
 * sink:   send N prediction-sized records in batches of --batch, one send at a time (awaited)
 *         and with --in-flight sends outstanding (what the pipeline does), each to a new topic.
 */
import { parseArgs } from "node:util";
import { Admin, ProduceAcks, Producer, stringSerializers } from "@platformatic/kafka";
import type { OutRecord } from "../src/pipeline/types.ts";
import { type Compression, COMPRESSIONS, createKafkaSink } from "../src/kafka/sink.ts";
import { DEFAULT_COMPRESSION } from "../src/kafka/connect.ts";
import { createKafkaSource } from "../src/kafka/source.ts";

const { values: args } = parseArgs({
  options: {
    messages: { type: "string", default: "200000" },
    batch: { type: "string", default: "256" },
    partitions: { type: "string", default: "3" },
    "in-flight": { type: "string", default: "4" },
    compression: { type: "string", default: DEFAULT_COMPRESSION },
    brokers: { type: "string", default: Deno.env.get("EDGEINFER_KAFKA_BROKERS") ?? "127.0.0.1:9092" },
  },
});
const N = Number(args.messages);
const BATCH = Number(args.batch);
const PARTITIONS = Number(args.partitions);
const IN_FLIGHT = Number(args["in-flight"]);
const brokers = args.brokers.split(",");
const compression = args.compression as Compression;
if (!COMPRESSIONS.includes(compression)) {
  throw new Error(`--compression must be one of ${COMPRESSIONS.join(", ")}`);
}
const clientOptions = { clientId: "edgeinfer-bench", bootstrapBrokers: brokers };
const admin = new Admin(clientOptions);

async function newTopic(): Promise<string> {
  const topic = `edgeinfer-bench-${crypto.randomUUID().slice(0, 8)}`;
  await admin.createTopics({ topics: [topic], partitions: PARTITIONS, replicas: 1 });
  return topic;
}

const rate = (n: number, ms: number) => `${Math.round(n / (ms / 1000)).toLocaleString("en")} msg/s`;

// --- source ---------------------------------------------------------------------------------
{
  const topic = await newTopic();
  // Topic just created: the producer's metadata lookups wait for its leaders.
  const producer = new Producer({
    ...clientOptions,
    serializers: stringSerializers,
    acks: ProduceAcks.ALL,
    retries: 10,
  });
  const payload = (i: number) =>
    JSON.stringify({ id: i, speed: 87.5, rpm: 2400, coolant: 91.2, battery: 12.6, ts: 1795666998123 });
  for (let i = 0; i < N; i += 5000) {
    const messages = [];
    for (let j = i; j < Math.min(N, i + 5000); j++) {
      messages.push({ topic, key: `car-${j % 1000}`, value: payload(j) });
    }
    await producer.send({ messages });
  }
  await producer.close();

  const groupId = `edgeinfer-bench-${crypto.randomUUID().slice(0, 8)}`;
  const source = createKafkaSource({
    brokers,
    topic,
    groupId,
    clientId: "edgeinfer-bench",
    fromBeginning: true,
  });
  const controller = new AbortController();
  let got = 0;
  let chunks = 0;
  let first = 0;
  const t0 = performance.now();
  for await (const chunk of source.events(controller.signal)) {
    if (got === 0) first = performance.now();
    got += chunk.length;
    chunks++;
    for (const e of chunk) e.ack();
    if (got >= N) break;
  }
  const end = performance.now();
  controller.abort();
  await source.close();
  const closed = performance.now();
  const [group] = await admin.listConsumerGroupOffsets({ groups: [groupId] });
  const committed = group.topics.filter((t) => t.name === topic)
    .flatMap((t) => t.partitions)
    .reduce((sum, p) => sum + Math.max(0, Number(p.committedOffset)), 0);
  console.log(
    `source: ${got} messages (${payload(0).length} B) in ${chunks} chunks, ${PARTITIONS} partitions: ` +
      `${rate(got, end - first)} (first event after ${Math.round(first - t0)} ms: connect+join; ` +
      `close ${Math.round(closed - end)} ms; committed ${committed}/${N})`,
  );
  await admin.deleteTopics({ topics: [topic] });
}

// --- sink -----------------------------------------------------------------------------------
const records: OutRecord[] = [];
for (let i = 0; i < N; i++) {
  const key = `car-${String(i % 1000).padStart(5, "0")}`;
  records.push({
    key,
    value: JSON.stringify({
      key,
      id: String(i),
      score: 0.0132,
      anomaly: false,
      threshold: 0.05,
      model: { name: "car-anomaly", version: "1" },
      ts: 1795666998123,
    }),
    headers: { "edgeinfer-source": `kafka:cars:${i % 3}:${i}`, "edgeinfer-model": "car-anomaly@1" },
  });
}
for (const inFlight of [1, IN_FLIGHT]) {
  const topic = await newTopic();
  const sink = createKafkaSink({ brokers, topic, clientId: "edgeinfer-bench", compression });
  await sink.send(records.slice(0, 1)); // connect outside the measurement
  const t0 = performance.now();
  const outstanding = new Set<Promise<void>>();
  for (let i = 0; i < N; i += BATCH) {
    const p: Promise<void> = sink.send(records.slice(i, i + BATCH)).then(() => {}).finally(() =>
      outstanding.delete(p)
    );
    outstanding.add(p);
    if (outstanding.size >= inFlight) await Promise.race(outstanding);
  }
  await Promise.all(outstanding);
  const ms = performance.now() - t0;
  await sink.close();
  console.log(
    `sink: ${N} records (${records[0].value.length} B + headers), batches of ${BATCH}, ` +
      `${inFlight} send(s) in flight, acks=all idempotent, compression=${compression}: ${rate(N, ms)}`,
  );
  await admin.deleteTopics({ topics: [topic] });
}
await admin.close();
