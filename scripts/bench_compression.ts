/**
 * What each Kafka sink compression codec costs and saves on the car stream (scripts/services.sh up).
 *
 *   deno run -A scripts/bench_compression.ts [--events 100000] [--codecs none,gzip,snappy,lz4,zstd]
 *       [--scenarios bulk,trickle] [--predictions FILE] [--brokers 127.0.0.1:9092] [--keep]
 *
 * The records are real: a seeded fleet (`edgeinfer simulate --count N --rate 0 --seed 2001`) scored
 * by `edgeinfer run --model models/car-anomaly.onnx --key-field car` into a file (or --predictions, one
 * prediction per line), keyed by car and with the headers the MQTT car stream gives them
 * (edgeinfer-source `mqtt:cars/<car>/sensors`, edgeinfer-model). For each codec and scenario the same
 * N records go through the product's sink (createSink, `kafka://…/<topic>?compression=<codec>`) to a
 * new one-partition topic:
 *
 *   bulk     batches of 256 with 4 sends in flight: the pipeline under load (the sink then packs
 *            queued batches into requests of up to 512 KiB, so compressed batches are large);
 *   trickle  batches of 16, one send at a time: a fleet of 3000 events/s with the 5 ms linger, where
 *            each request carries one small batch (the worst case for the ratio).
 *
 * One JSON line per codec and scenario on stdout:
 *   wireBytesPerEvent  the partition's size on the broker (Admin describeLogDirs) / N: the record
 *                      batches exactly as the producer sent them (the topic keeps the producer's codec);
 *                      a produce request adds ~100 bytes of framing per request on top;
 *   ratio              wireBytesPerEvent(none) / wireBytesPerEvent(codec), same scenario;
 *   cpuUsPerEvent      this process's CPU time (user + system, process.cpuUsage()) from the first send
 *                      to the last ack, / N: serialising, compressing, the client's protocol work;
 *   eventsPerSecond    N / wall time of the same span.
 * Each run is repeated --repeat times (a new topic each time) and the median CPU and rate reported;
 * a warm-up run (uncompressed, discarded) goes first, so that no codec pays for the JIT.
 * A table follows on stderr. Topics are deleted afterwards unless --keep.
 */
import { parseArgs } from "node:util";
import process from "node:process";
import { Admin } from "@platformatic/kafka";
import { createSink } from "../src/connectors.ts";
import type { OutRecord } from "../src/pipeline/types.ts";
import { COMPRESSIONS } from "../src/kafka/sink.ts";

const { values: args } = parseArgs({
  options: {
    events: { type: "string", default: "100000" },
    codecs: { type: "string", default: COMPRESSIONS.join(",") },
    scenarios: { type: "string", default: "bulk,trickle" },
    predictions: { type: "string" },
    brokers: { type: "string", default: Deno.env.get("EDGEINFER_KAFKA_BROKERS") ?? "127.0.0.1:9092" },
    repeat: { type: "string", default: "3" },
    keep: { type: "boolean", default: false },
  },
});
const N = Number(args.events);
const codecs = args.codecs.split(",");
for (const c of codecs) {
  if (!(COMPRESSIONS as readonly string[]).includes(c)) throw new Error(`unknown codec ${c}`);
}
const SCENARIOS: Record<string, { batch: number; inFlight: number }> = {
  bulk: { batch: 256, inFlight: 4 },
  trickle: { batch: 16, inFlight: 1 },
};
const scenarios = args.scenarios.split(",");
for (const s of scenarios) if (!(s in SCENARIOS)) throw new Error(`unknown scenario ${s}`);
const brokers = args.brokers.split(",");
const say = (m: string) => console.error(`bench_compression: ${m}`);

async function edgeinfer(argv: string[]): Promise<void> {
  const { code, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("../main.ts", import.meta.url).pathname, ...argv],
    stdout: "null",
    stderr: "piped",
  }).output();
  if (code !== 0) throw new Error(`edgeinfer ${argv[0]} failed:\n${new TextDecoder().decode(stderr)}`);
}

/** N real car predictions (value lines), made with edgeinfer simulate + run unless given. */
async function predictionLines(): Promise<string[]> {
  let file = args.predictions;
  if (file === undefined) {
    const dir = await Deno.makeTempDir({ prefix: "edgeinfer-bench-compression-" });
    file = `${dir}/predictions.jsonl`;
    say(`simulating ${N} car events and scoring them with models/car-anomaly.onnx (${dir})`);
    await edgeinfer([
      "simulate",
      "--count",
      String(N),
      "--rate",
      "0",
      "--seed",
      "2001",
      "--target",
      `file:${dir}/cars.jsonl`,
    ]);
    await edgeinfer([
      "run",
      "--model",
      new URL("../models/car-anomaly.onnx", import.meta.url).pathname,
      "--source",
      `file:${dir}/cars.jsonl`,
      "--key-field",
      "car",
      "--sink",
      `file:${file}`,
      "--quiet",
    ]);
  }
  const lines = (await Deno.readTextFile(file)).split("\n").filter((l) => l !== "");
  if (lines.length < N) throw new Error(`${file} has ${lines.length} predictions, fewer than --events ${N}`);
  return lines.slice(0, N);
}

const records: OutRecord[] = (await predictionLines()).map((value) => {
  const p = JSON.parse(value) as { key: string; model: { name: string; version: string } };
  return {
    key: p.key,
    value,
    headers: {
      "edgeinfer-source": `mqtt:cars/${p.key}/sensors`,
      "edgeinfer-model": `${p.model.name}:${p.model.version}`,
    },
  };
});
const rawBytes = records.reduce(
  (n, r) =>
    n + r.value.length + (r.key?.length ?? 0) +
    Object.entries(r.headers).reduce((h, [k, v]) => h + k.length + v.length, 0),
  0,
);
say(`${N} predictions, ${(rawBytes / N).toFixed(1)} bytes of key + value + headers per event; e.g.`);
say(`  ${records[0].value}`);

const admin = new Admin({ clientId: "edgeinfer-bench-compression", bootstrapBrokers: brokers });
const run = crypto.randomUUID().slice(0, 8);

async function partitionSize(topic: string): Promise<number> {
  const dirs = await admin.describeLogDirs({ topics: [{ name: topic, partitions: [0] }] });
  let size = 0;
  for (const broker of dirs) {
    for (const result of broker.results) {
      for (const t of result.topics) {
        if (t.name === topic) { for (const p of t.partitions) size += Number(p.partitionSize); }
      }
    }
  }
  return size;
}

interface Result {
  codec: string;
  scenario: string;
  batch: number;
  inFlight: number;
  events: number;
  repeats: number;
  rawBytesPerEvent: number;
  wireBytesPerEvent: number;
  ratio: number;
  cpuUsPerEvent: number;
  eventsPerSecond: number;
}
const repeats = Number(args.repeat);
const results: Result[] = [];
const topics: string[] = [];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** One run: the N records through a new sink to a new topic. */
async function measure(
  codec: string,
  batch: number,
  inFlight: number,
  label: string,
): Promise<{ wire: number; cpuUs: number; ms: number }> {
  const topic = `edgeinfer-bench-compression-${run}-${label}`;
  topics.push(topic);
  await admin.createTopics({ topics: [topic], partitions: 1, replicas: 1 });
  const sink = await createSink("--sink", `kafka://${brokers.join(",")}/${topic}?compression=${codec}`);
  // Outside the measurement: connect, metadata, producer id, the codec's first call (wasm). The
  // warm-up record stays in the log: its size is subtracted below.
  await sink.send(records.slice(0, 1));
  const warmSize = await partitionSize(topic);
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const outstanding = new Set<Promise<void>>();
  for (let i = 0; i < N; i += batch) {
    const p: Promise<void> = sink.send(records.slice(i, i + batch)).then((refused) => {
      if (refused && refused.length > 0) throw new Error(`${refused.length} refused: ${refused[0].reason}`);
    }).finally(() => outstanding.delete(p));
    outstanding.add(p);
    if (outstanding.size >= inFlight) await Promise.race(outstanding);
  }
  await Promise.all(outstanding);
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  await sink.close();
  return { wire: (await partitionSize(topic)) - warmSize, cpuUs: cpu.user + cpu.system, ms };
}

try {
  say("warm-up run (uncompressed, not reported)");
  await measure("none", 256, 4, "warmup");
  for (const scenario of scenarios) {
    const { batch, inFlight } = SCENARIOS[scenario];
    for (const codec of codecs) {
      const runs = [];
      for (let i = 0; i < repeats; i++) {
        runs.push(await measure(codec, batch, inFlight, `${scenario}-${codec}-${i}`));
      }
      const wire = median(runs.map((r) => r.wire));
      const none = results.find((r) => r.scenario === scenario && r.codec === "none");
      const result: Result = {
        codec,
        scenario,
        batch,
        inFlight,
        events: N,
        repeats,
        rawBytesPerEvent: Number((rawBytes / N).toFixed(1)),
        wireBytesPerEvent: Number((wire / N).toFixed(1)),
        ratio: none ? Number((none.wireBytesPerEvent / (wire / N)).toFixed(2)) : codec === "none" ? 1 : NaN,
        cpuUsPerEvent: Number((median(runs.map((r) => r.cpuUs)) / N).toFixed(2)),
        eventsPerSecond: Math.round(median(runs.map((r) => N / (r.ms / 1000)))),
      };
      results.push(result);
      console.log(JSON.stringify(result));
    }
  }
} finally {
  if (!args.keep && topics.length > 0) await admin.deleteTopics({ topics }).catch(() => {});
  await admin.close();
}

const pad = (s: string | number, n: number) => String(s).padStart(n);
console.error(
  `\n${N} car predictions per run, ${
    (rawBytes / N).toFixed(1)
  } B key+value+headers each; ${navigator.hardwareConcurrency} CPUs`,
);
console.error("scenario  codec   wire B/event  ratio  CPU µs/event   events/s");
for (const r of results) {
  console.error(
    `${r.scenario.padEnd(8)}  ${r.codec.padEnd(6)}  ${pad(r.wireBytesPerEvent.toFixed(1), 12)}  ${
      pad(Number.isNaN(r.ratio) ? "n/a" : r.ratio.toFixed(2), 5)
    }  ${pad(r.cpuUsPerEvent.toFixed(1), 12)}  ${pad(r.eventsPerSecond.toLocaleString("en"), 9)}`,
  );
}
