/**
 * `edgeinfer run --http` on the real brokers: /metrics after a known stream (checked by promtool and against
 * what was sent), and /readyz through a Kafka outage on a private Kafka that this test stops and starts.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { Kafka, logLevel } from "kafkajs";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { type RunningCli, spawnCli } from "../cli/run_cli.ts";
import { consume, createTopic, KAFKA_BROKERS, privateKafkaServices, produce, uniqueName } from "./brokers.ts";
import { sha256Hex } from "../../src/model/wire.ts";

const KAFKA = KAFKA_BROKERS.join(",");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The address the run serves on (it was given port 0), from its log line. */
async function httpBase(run: RunningCli): Promise<string> {
  await run.waitForStderr(/serving \/metrics, \/healthz and \/readyz on http:\/\/\S+/);
  return run.stderr().match(/serving \/metrics, \/healthz and \/readyz on (http:\/\/\S+)/)![1];
}

async function scrape(base: string): Promise<string> {
  const response = await fetch(`${base}/metrics`);
  assert.equal(response.status, 200);
  return await response.text();
}

/** Samples of a scrape by series, e.g. `edgeinfer_events_acked_total{pipeline="main"}` → 1000. */
function samples(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const space = line.lastIndexOf(" ");
    values.set(line.slice(0, space), Number(line.slice(space + 1)));
  }
  return values;
}

async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(200);
  }
}

async function promtoolCheck(text: string): Promise<{ code: number; output: string }> {
  const child = new Deno.Command("promtool", {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const decoder = new TextDecoder();
  return { code: out.code, output: decoder.decode(out.stdout) + decoder.decode(out.stderr) };
}

Deno.test({
  name: "--http /metrics after Kafka → Kafka: promtool accepts it, the counters agree with what was sent",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    const input = uniqueName("metrics-in");
    const out = uniqueName("metrics-out");
    const dlq = uniqueName("metrics-dlq");
    await createTopic(input, 2);
    const good = 990;
    const messages: { key: string; value: string }[] = [];
    for (let i = 0; i < good; i++) {
      messages.push({ key: `k${i % 5}`, value: JSON.stringify({ id: i, a: i % 10 }) });
    }
    for (let i = 0; i < 6; i++) {
      messages.push({ key: "bad", value: JSON.stringify({ id: `bad${i}`, a: "x" }) });
    }
    for (let i = 0; i < 3; i++) {
      messages.push({ key: "big", value: JSON.stringify({ id: `big${i}`, a: 1, pad: "p".repeat(400) }) });
    }
    // Not UTF-8 (kafkajs takes a Buffer as a value).
    messages.push({ key: "bin", value: Buffer.from([0xff, 0xfe, 0x7b]) as unknown as string });
    const total = messages.length; // 1000
    await produce(input, messages);

    const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0, threshold: 5 });
    const run = spawnCli([
      "run",
      "--model",
      model,
      "--source",
      `kafka://${KAFKA}/${input}?group=${uniqueName("metrics")}`,
      "--sink",
      `kafka://${KAFKA}/${out}`,
      "--dlq",
      `kafka://${KAFKA}/${dlq}`,
      "--max-payload-bytes",
      "300",
      "--batch-size",
      "64",
      "--http",
      "127.0.0.1:0",
    ]);
    try {
      const base = await httpBase(run);
      const m = await until("every event acknowledged", 60_000, async () => {
        const m = samples(await scrape(base));
        return m.get(`edgeinfer_events_acked_total{pipeline="main"}`) === total ? m : undefined;
      });
      const text = await scrape(base);
      const check = await promtoolCheck(text);
      assert.equal(check.code, 0, `promtool check metrics:\n${check.output}`);
      assert.equal(check.output.trim(), "", "no lint findings");

      /** A sample of pipeline main, e.g. p("edgeinfer_dead_letters_total", 'reason="undecodable"'). */
      const p = (name: string, labels = "") => m.get(`${name}{pipeline="main"${labels && `,${labels}`}}`);
      assert.equal(p("edgeinfer_events_received_total"), total);
      assert.equal(p("edgeinfer_predictions_total"), good);
      assert.equal(p("edgeinfer_dead_letters_total", `reason="undecodable"`), 6);
      assert.equal(p("edgeinfer_dead_letters_total", `reason="payload_too_large"`), 3);
      assert.equal(p("edgeinfer_dead_letters_total", `reason="invalid_utf8"`), 1);
      assert.equal(p("edgeinfer_dead_letters_total", `reason="non_finite_score"`), 0);
      assert.equal(p("edgeinfer_dead_letters_total", `reason="sink_refused"`), 0);
      assert.equal(p("edgeinfer_anomalies_total"), [...Array(good).keys()].filter((i) => i % 10 > 5).length);
      assert.equal(p("edgeinfer_batch_size_sum"), total);
      assert.equal(p("edgeinfer_event_latency_seconds_count"), total);
      assert.ok(p("edgeinfer_inference_seconds_count")! >= 1);
      assert.equal(p("edgeinfer_batches_in_flight"), 0);
      assert.equal(p("edgeinfer_batches_in_flight_limit"), 4);
      assert.equal(p("edgeinfer_ready"), 1);
      assert.equal(p("edgeinfer_part_up", `part="Kafka source ${KAFKA}"`), 1);
      assert.equal(p("edgeinfer_part_up", `part="Kafka sink ${KAFKA}"`), 1);
      const sha256 = sha256Hex(await Deno.readFile(model));
      assert.ok(text.includes(`sha256="${sha256}"} 1`), `model_info with the model file's sha256 ${sha256}`);
      assert.ok(m.get("process_resident_memory_bytes")! > 10e6);
      assert.ok(m.has("process_cpu_seconds_total"));
      // What reached Kafka agrees too.
      assert.equal((await consume(out, good, 30_000)).length, good);
      assert.equal((await consume(dlq, total - good, 30_000)).length, total - good);
      const batches = p("edgeinfer_batch_size_count")!;

      run.child.kill("SIGTERM");
      assert.equal(await run.exit(), 0, run.stderr());
      // The summary's batch count is the histogram's.
      assert.match(run.stderr(), new RegExp(`done: ${total} events acked .* ${batches} batches `));
    } finally {
      if (run.exited === undefined) run.child.kill("SIGTERM");
      await run.exit();
    }
  },
});

const PORT = Number(Deno.env.get("EDGEINFER_METRICS_KAFKA_PORT") ?? 19692);
const BROKER = `127.0.0.1:${PORT}`;
const services = privateKafkaServices(
  Deno.env.get("EDGEINFER_METRICS_KAFKA_STATE") ?? "/tmp/edgeinfer-metrics-kafka",
  PORT,
);

async function readyz(
  base: string,
): Promise<{ status: number; body: { ready: boolean; reasons: string[] } }> {
  const response = await fetch(`${base}/readyz`);
  return { status: response.status, body: await response.json() };
}

Deno.test({
  name:
    "--http /readyz: 200 once Kafka source and sink connected, 503 naming Kafka while it is down, 200 again",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await services("kafka-down").catch(() => {});
    await services("kafka-up");
    const privateKafka = new Kafka({
      clientId: "edgeinfer-tests",
      brokers: [BROKER],
      logLevel: logLevel.NOTHING,
    });
    const input = uniqueName("ready-in");
    const out = uniqueName("ready-out");
    await createTopic(input, 1, privateKafka);
    await createTopic(out, 1, privateKafka);
    const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
    const run = spawnCli([
      "run",
      "--model",
      model,
      "--source",
      `kafka://${BROKER}/${input}?group=${uniqueName("ready")}&request-timeout-ms=3000`,
      "--sink",
      `kafka://${BROKER}/${out}?request-timeout-ms=3000`,
      "--retry-max-backoff",
      "1s",
      "--status-every",
      "1",
      "--http",
      "127.0.0.1:0",
    ]);
    try {
      const base = await httpBase(run);
      const ready = await until("ready", 60_000, async () => {
        const r = await readyz(base);
        return r.status === 200 ? r : undefined;
      });
      assert.deepEqual(ready.body, { ready: true, reasons: [] });
      // Events flow (a positive signal before the outage).
      await produce(input, [0, 1, 2].map((i) => ({ value: JSON.stringify({ id: i, a: i }) })), privateKafka);
      await until(
        "3 events acked",
        30_000,
        async () =>
          samples(await scrape(base)).get(`edgeinfer_events_acked_total{pipeline="main"}`) === 3
            ? true
            : undefined,
      );

      await services("kafka-stop");
      const downAt = Date.now();
      const notReady = await until("not ready", 60_000, async () => {
        const r = await readyz(base);
        return r.status === 503 ? r : undefined;
      });
      console.log(
        `not ready ${Date.now() - downAt} ms after Kafka stopped: ${notReady.body.reasons.join("; ")}`,
      );
      assert.equal(notReady.body.ready, false);
      assert.ok(
        notReady.body.reasons.some((r) =>
          new RegExp(`^pipeline main: waiting for Kafka (source|sink) ${BROKER}`).test(r)
        ),
        notReady.body.reasons.join("\n"),
      );
      const health = await fetch(`${base}/healthz`);
      assert.equal(health.status, 200, "alive while waiting out the outage");
      assert.equal((await health.json()).status, "ok");
      const m = samples(await scrape(base));
      assert.equal(m.get(`edgeinfer_ready{pipeline="main"}`), 0);
      assert.ok(
        [...m].some(([series, v]) =>
          series.startsWith("edgeinfer_part_retrying{") && series.includes("Kafka") && v === 1
        ),
      );
      assert.ok(
        [...m].some(([series, v]) => series.startsWith("edgeinfer_retries_total{") && v >= 1),
      );

      await services("kafka-up");
      const upAt = Date.now();
      await until("ready again", 90_000, async () => (await readyz(base)).status === 200 ? true : undefined);
      console.log(`ready again ${Date.now() - upAt} ms after Kafka was started`);
      await produce(input, [3, 4].map((i) => ({ value: JSON.stringify({ id: i, a: i }) })), privateKafka);
      await until(
        "5 events acked",
        60_000,
        async () =>
          samples(await scrape(base)).get(`edgeinfer_events_acked_total{pipeline="main"}`) === 5
            ? true
            : undefined,
      );
      assert.equal(run.exited, undefined);
      run.child.kill("SIGTERM");
      assert.equal(await run.exit(), 0, run.stderr());
    } finally {
      if (run.exited === undefined) run.child.kill("SIGTERM");
      await run.exit();
      await services("kafka-down").catch(() => {});
    }
  },
});
