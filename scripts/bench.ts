/**
 * The README's end-to-end table: `edgeinfer bench --source … --sink …` (src/bench/end_to_end.ts, the
 * same code) for each scenario and batch size, in one sitting so the figures compare as ratios.
 * Needs the services (scripts/services.sh up).
 *
 *   deno run -A scripts/bench.ts [--model PATH --messages FILE --format json|delimited]
 *                                [--events N] [--batch-sizes 1,256] [--scenarios file,kafka,mqtt]
 *   deno run -A main.ts simulate --count 50000 --rate 0 --quiet --target file:/tmp/cars.jsonl
 *   deno run -A scripts/bench.ts --model models/car-anomaly.onnx --format json --messages /tmp/cars.jsonl
 *
 * Default model: the seed KSQL UDF autoencoder in ../shared (210 features, delimited payloads);
 * events are its 23 test messages repeated (any file of events cycles the same way). Batch 1 over a
 * broker costs one acks=all round trip per event: it runs min(N, 5000) events.
 */
import { parseArgs } from "node:util";
import { benchEndToEnd } from "../src/bench/end_to_end.ts";
import { readEventLines, repeatEvents } from "../src/bench/input.ts";

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
const format = values.format as "json" | "delimited";
const total = Number(values.events);
const lines = await readEventLines(values.messages!);
const scratch = await Deno.makeTempDir({ prefix: "edgeinfer-bench-" });
const SCENARIOS: Record<string, { name: string; source: string; sink: string }> = {
  file: { name: "file → stdout", source: `file:${scratch}/events`, sink: "-" },
  kafka: {
    name: "Kafka → Kafka",
    source: `kafka://${values.kafka}/bench-in`,
    sink: `kafka://${values.kafka}/bench-out`,
  },
  mqtt: {
    name: "MQTT → Kafka (QoS 1)",
    source: `mqtt://${values.mqtt}/bench/events?qos=1`,
    sink: `kafka://${values.kafka}/bench-mqtt-out`,
  },
};

console.log(`model ${values.model}; ${total} events (batch 1 on brokers: ${Math.min(total, 5000)})`);
console.log("scenario              batch   events/s   peak RSS MB");
for (const key of values.scenarios!.split(",")) {
  const scenario = SCENARIOS[key];
  if (scenario === undefined) throw new Error(`unknown scenario '${key}'; known: file, kafka, mqtt`);
  for (const batch of values["batch-sizes"]!.split(",").map(Number)) {
    const n = batch === 1 && key !== "file" ? Math.min(total, 5000) : total;
    const { results: [r] } = await benchEndToEnd({
      model: values.model!,
      format,
      threads: 1,
      source: scenario.source,
      sink: scenario.sink,
      batchSizes: [batch],
      events: repeatEvents(lines, n, format),
    });
    // A rate of events that were rejected instead of scored would measure the wrong thing.
    if (r.deadLettered > 0) throw new Error(`${r.deadLettered} events were dead-lettered (check --format)`);
    console.log(
      `${scenario.name.padEnd(22)}${String(batch).padStart(5)} ${String(r.eventsPerSecond).padStart(10)} ` +
        `${r.peakRssMB === null ? "n/a" : r.peakRssMB.toFixed(0).padStart(13)}`,
    );
  }
}
await Deno.remove(scratch, { recursive: true });
