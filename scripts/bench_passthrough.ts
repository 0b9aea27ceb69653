/**
 * Bare Kafka passthrough on @platformatic/kafka: consume -> produce -> commit, no decoding, no model.
 * The floor under the pipeline's Kafka-to-Kafka throughput, pipelined the way the pipeline is:
 * records taken in consumption order in batches of up to --batch (256), up to --in-flight (4)
 * produce requests outstanding (idempotent producer, acks=all, two string headers per record),
 * and every 500 ms a commit of each partition's contiguous done offset (next offset to read).
 *
 *   .tools/node_modules/.bin/deno run -A scripts/bench_passthrough.ts [--messages 200000]
 *       [--partitions 3] [--brokers 127.0.0.1:9092] [--batch 256] [--in-flight 4]
 *
 * Pre-fills a new input topic with N ~200-byte JSON messages (platformatic producer, round robin over
 * the partitions), then measures from the first consumed message to the commit that covers all N.
 * Prints one JSON line: "events_per_s", "seconds", "peak_rss_mb" (process RSS from the end of the
 * pre-fill on: it starts at what the pre-fill left, uncollected garbage included), "prefill_peak_rss_mb",
 * "output_records" (end offsets of the output topic: N when nothing was duplicated), ...
 * Needs a running broker (scripts/services.sh up); the two topics it creates are deleted at the end.
 */
import { parseArgs } from "node:util";
import { Buffer } from "node:buffer";
import {
  Admin,
  Consumer,
  type Message,
  MessagesStreamModes,
  ProduceAcks,
  Producer,
  stringSerializer,
} from "@platformatic/kafka";

const { values: args } = parseArgs({
  options: {
    messages: { type: "string", default: "200000" },
    partitions: { type: "string", default: "3" },
    brokers: { type: "string", default: Deno.env.get("EDGEINFER_KAFKA_BROKERS") ?? "127.0.0.1:9092" },
    batch: { type: "string", default: "256" },
    "in-flight": { type: "string", default: "4" },
  },
});
const N = Number(args.messages);
const PARTITIONS = Number(args.partitions);
const BATCH = Number(args.batch);
const IN_FLIGHT = Number(args["in-flight"]);
const brokers = args.brokers.split(",");
const COMMIT_INTERVAL_MS = 500;
const MAX_FETCH_BYTES = 1 << 20; // what src/kafka/source.ts asks for with the default held budget
const MAX_WAIT_MS = 250;

let peakRss = 0;
const sampleRss = () => peakRss = Math.max(peakRss, Deno.memoryUsage().rss);
const rssTimer = setInterval(sampleRss, 50);

const id = crypto.randomUUID().slice(0, 8);
const input = `edgeinfer-passthrough-in-${id}`;
const output = `edgeinfer-passthrough-out-${id}`;
const admin = new Admin({ clientId: "edgeinfer-bench-admin", bootstrapBrokers: brokers });
await admin.createTopics({ topics: [input, output], partitions: PARTITIONS, replicas: 1 });

// --- pre-fill -----------------------------------------------------------------------------------
const payload = (i: number) =>
  JSON.stringify({
    id: i,
    device: `car-${i % 1000}`,
    speed: 87.5,
    rpm: 2400,
    coolant: 91.2,
    battery: 12.6,
    ts: 1795666998123 + i,
    note: "x".repeat(86),
  });
const fillStart = performance.now();
{
  const producer = new Producer({
    clientId: "edgeinfer-bench-fill",
    bootstrapBrokers: brokers,
    acks: ProduceAcks.LEADER,
  });
  // one send() puts all its records for a partition in one record batch, which the broker refuses
  // above message.max.bytes (1 MiB by default): 2000 x ~240 bytes stays under it even on one partition
  const CHUNK = 2000;
  let next = 0;
  const worker = async () => {
    while (next < N) {
      const from = next;
      next = Math.min(N, next + CHUNK);
      const messages = [];
      for (let i = from; i < next; i++) {
        messages.push({
          topic: input,
          partition: i % PARTITIONS,
          key: Buffer.from(`car-${i % 1000}`),
          value: Buffer.from(payload(i)),
        });
      }
      await producer.send({ messages });
    }
  };
  await Promise.all([worker(), worker(), worker(), worker()]);
  await producer.close();
}
const fillSeconds = (performance.now() - fillStart) / 1000;
sampleRss();
const prefillPeakRss = peakRss;
peakRss = Deno.memoryUsage().rss;

// --- passthrough --------------------------------------------------------------------------------
const consumer = new Consumer({
  clientId: "edgeinfer-bench-passthrough",
  groupId: `edgeinfer-passthrough-${id}`,
  bootstrapBrokers: brokers,
  autocommit: false,
  maxBytes: MAX_FETCH_BYTES,
  maxWaitTime: MAX_WAIT_MS,
  retries: true,
});
// Keys and values are passed on as Buffers (the default no-op serializers need Buffers); only the
// header strings need a serializer. A string where a Buffer is expected makes the encoder throw a
// TypeError that the idempotent producer retries forever: send() never settles.
const producer = new Producer({
  clientId: "edgeinfer-bench-passthrough-out",
  bootstrapBrokers: brokers,
  idempotent: true,
  acks: ProduceAcks.ALL,
  serializers: { headerKey: stringSerializer, headerValue: stringSerializer },
});

interface Batch {
  records: Message<Buffer, Buffer, Buffer, Buffer>[];
  /** partition -> next offset to read once this batch is produced, and its leader epoch */
  ends: Map<number, { offset: bigint; leaderEpoch: number }>;
  done: boolean;
}

const stream = await consumer.consume({
  topics: [input],
  mode: MessagesStreamModes.COMMITTED,
  fallbackMode: "earliest",
});

let firstConsumedAt = 0;
let consumed = 0;
let committedTotal = 0n;
let lastCommitAt = 0;
const queue: Message<Buffer, Buffer, Buffer, Buffer>[] = [];
const outstanding: Batch[] = []; // in consumption order
const donePoint = new Map<number, { offset: bigint; leaderEpoch: number }>();
const committedPoint = new Map<number, bigint>();
let failure: unknown;
let wake: (() => void) | undefined;
const poke = () => {
  wake?.();
  wake = undefined;
};

// 'readable' (not 'data'): the stream's buffer fills to its highWaterMark plus one fetch response and
// then it stops fetching; read() takes what a fetch brought in one go, only as fast as we produce.
stream.on("readable", poke);
stream.on("error", (error) => {
  failure ??= error;
  poke();
});

function fillQueue() {
  while (queue.length < BATCH * IN_FLIGHT * 2) {
    const message = stream.read() as Message<Buffer, Buffer, Buffer, Buffer> | null;
    if (message === null) break;
    if (consumed++ === 0) firstConsumedAt = performance.now();
    queue.push(message);
  }
}

function startBatch() {
  const records = queue.splice(0, BATCH);
  const ends = new Map<number, { offset: bigint; leaderEpoch: number }>();
  for (const r of records) ends.set(r.partition, { offset: r.offset + 1n, leaderEpoch: r.leaderEpoch });
  const batch: Batch = { records, ends, done: false };
  outstanding.push(batch);
  producer.send({
    messages: records.map((r) => ({
      topic: output,
      key: r.key,
      value: r.value,
      headers: {
        "edgeinfer-model": "passthrough",
        "edgeinfer-source": `${input}/${r.partition}/${r.offset}`,
      },
    })),
  }).then(() => {
    batch.done = true;
    batch.records = [];
    // contiguous: only batches whose predecessors are all done move the commit point
    while (outstanding.length > 0 && outstanding[0].done) {
      for (const [partition, end] of outstanding.shift()!.ends) donePoint.set(partition, end);
    }
    poke();
  }, (error) => {
    failure ??= error;
    poke();
  });
}

let commitInFlight = false;
async function commit() {
  if (commitInFlight) return;
  const offsets = [];
  for (const [partition, { offset, leaderEpoch }] of donePoint) {
    if (committedPoint.get(partition) !== offset) {
      offsets.push({ topic: input, partition, offset, leaderEpoch });
    }
  }
  if (offsets.length === 0) return;
  commitInFlight = true;
  try {
    await consumer.commit({ offsets });
    for (const { partition, offset } of offsets) committedPoint.set(partition, offset);
    committedTotal = [...committedPoint.values()].reduce((a, b) => a + b, 0n);
    lastCommitAt = performance.now();
  } catch (error) {
    failure ??= error;
  } finally {
    commitInFlight = false;
    poke();
  }
}
const commitTimer = setInterval(commit, COMMIT_INTERVAL_MS);

while (committedTotal < BigInt(N) && failure === undefined) {
  fillQueue();
  while (outstanding.length < IN_FLIGHT && queue.length > 0) startBatch();
  if (consumed >= N && outstanding.length === 0 && queue.length === 0) await commit();
  if (committedTotal >= BigInt(N) || failure !== undefined) break;
  await new Promise<void>((resolve) => {
    wake = resolve;
    setTimeout(poke, COMMIT_INTERVAL_MS); // a commit tick or a stream with nothing new
  });
}
clearInterval(commitTimer);
clearInterval(rssTimer);
sampleRss();

await stream.close();
const produced = await consumer.listOffsets({ topics: [output] });
const outputRecords = Number((produced.get(output) ?? []).reduce((a, b) => a + b, 0n));
await consumer.close(true);
await producer.close();
await admin.deleteTopics({ topics: [input, output] }).catch(() => {});
await admin.close();

if (failure !== undefined) {
  console.error("passthrough failed:", failure);
  Deno.exit(1);
}
const seconds = (lastCommitAt - firstConsumedAt) / 1000;
console.log(JSON.stringify({
  bench: "passthrough",
  library: "@platformatic/kafka@2.12.1",
  messages: N,
  partitions: PARTITIONS,
  batch: BATCH,
  in_flight: IN_FLIGHT,
  value_bytes: Buffer.byteLength(payload(N - 1)),
  prefill_s: Number(fillSeconds.toFixed(2)),
  prefill_per_s: Math.round(N / fillSeconds),
  seconds: Number(seconds.toFixed(2)),
  events_per_s: Math.round(N / seconds),
  output_records: outputRecords,
  peak_rss_mb: Math.round(peakRss / (1 << 20)),
  prefill_peak_rss_mb: Math.round(prefillPeakRss / (1 << 20)),
}));
