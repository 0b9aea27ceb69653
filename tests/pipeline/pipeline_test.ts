import assert from "node:assert/strict";
import { JsonDecoder } from "../../src/codecs/json.ts";
import { PredictionEncoder } from "../../src/codecs/prediction.ts";
import { Model } from "../../src/model/model.ts";
import { Pipeline } from "../../src/pipeline/pipeline.ts";
import { Health } from "../../src/pipeline/health.ts";
import { Stats } from "../../src/pipeline/stats.ts";
import type { OutRecord, Sink, Source, SourceEvent } from "../../src/pipeline/types.ts";
import { linearModel } from "../fixtures/linear_model.ts";

const encoder = new TextEncoder();

/** An in-memory source: yields the given payload chunks, records acks, pause and resume. */
function memorySource(chunks: string[][]) {
  const acked: number[] = [];
  const calls: string[] = [];
  let seq = 0;
  const source: Source = {
    description: "memory",
    async *events(signal: AbortSignal) {
      for (const chunk of chunks) {
        if (signal.aborted) return;
        yield chunk.map((text): SourceEvent => {
          const n = seq++;
          return {
            payload: encoder.encode(text),
            key: `k${n}`,
            receivedAt: 0,
            origin: { kind: "file", path: "memory", line: n + 1 },
            ack: () => acked.push(n),
          };
        });
        await Promise.resolve();
      }
    },
    pause: () => calls.push("pause"),
    resume: () => calls.push("resume"),
    close: () => Promise.resolve(),
  };
  return { source, acked, calls };
}

/** A sink that keeps records; each send() stays pending until release() when `hold` is set. */
function memorySink(hold = false) {
  const records: OutRecord[] = [];
  const pending: (() => void)[] = [];
  const sink: Sink = {
    description: "memory",
    send(batch) {
      if (!hold) {
        records.push(...batch);
        return Promise.resolve();
      }
      return new Promise((resolve) =>
        pending.push(() => {
          records.push(...batch);
          resolve();
        })
      );
    },
    close: () => Promise.resolve(),
  };
  return { sink, records, pending };
}

async function setup(batchSize: number, maxInFlight = 4, maxEvents?: number) {
  const model = await Model.fromBytes(
    linearModel({ features: ["a", "b"], weights: [1, 10], bias: 0, threshold: 50 }),
    "linear",
  );
  const options = {
    model,
    decoder: new JsonDecoder({ features: ["a", "b"], idField: "id", passthrough: [] }),
    encoder: new PredictionEncoder({
      modelName: "linear",
      modelVersion: "1",
      threshold: 50,
      passthrough: [],
    }),
    batchSize,
    lingerMs: 5,
    maxInFlight,
    maxEvents,
    maxPayloadBytes: 100,
    stats: new Stats(),
    log: () => {},
  };
  return options;
}

const row = (i: number) => JSON.stringify({ id: i, a: i, b: i % 7 });

Deno.test("Pipeline scores every event in batches and acks each once its record is written", async () => {
  const chunks = [
    Array.from({ length: 300 }, (_, i) => row(i)),
    Array.from({ length: 30 }, (_, i) => row(300 + i)),
  ];
  const { source, acked } = memorySource(chunks);
  const { sink, records } = memorySink();
  const o = await setup(128);
  await new Pipeline({ ...o, source, sink, deadLetter: undefined }).run(new AbortController().signal);
  assert.equal(records.length, 330);
  records.forEach((r, i) => {
    const v = JSON.parse(r.value);
    assert.equal(v.id, i);
    assert.equal(v.score, i + 10 * (i % 7));
    assert.equal(v.anomaly, v.score > 50);
    assert.equal(r.key, `k${i}`);
  });
  assert.deepEqual(acked.toSorted((a, b) => a - b), Array.from({ length: 330 }, (_, i) => i));
  assert.equal(o.stats.batches, 3, "128 + 128 + 74: the second chunk joins the open batch within linger");
  await o.model.close();
});

Deno.test("Pipeline sends undecodable events to the dead-letter sink with the reason, and acks them", async () => {
  const { source, acked } = memorySource([[
    row(0),
    "{oops",
    JSON.stringify({ a: "x", b: 1 }),
    "x".repeat(200),
    row(4),
  ]]);
  const out = memorySink();
  const dlq = memorySink();
  const o = await setup(16);
  await new Pipeline({ ...o, source, sink: out.sink, deadLetter: dlq.sink }).run(
    new AbortController().signal,
  );
  assert.deepEqual(out.records.map((r) => JSON.parse(r.value).id), [0, 4]);
  const reasons = dlq.records.map((r) => JSON.parse(r.value).error);
  assert.match(reasons[0], /^invalid JSON/);
  assert.equal(reasons[1], `feature 'a' is not a number: "x"`);
  assert.equal(reasons[2], "payload of 200 bytes exceeds --max-payload-bytes 100");
  assert.equal(JSON.parse(dlq.records[0].value).payload, "{oops");
  assert.equal(acked.length, 5);
  assert.equal(o.stats.deadLettered, 3);
  await o.model.close();
});

Deno.test("Pipeline acks nothing before the sink has made the batch durable, and pauses when full", async () => {
  const { source, acked, calls } = memorySource([Array.from({ length: 40 }, (_, i) => row(i))]);
  const { sink, records, pending } = memorySink(true);
  const o = await setup(10, 2);
  const run = new Pipeline({ ...o, source, sink, deadLetter: undefined }).run(new AbortController().signal);
  while (pending.length < 2) await new Promise((r) => setTimeout(r, 1));
  assert.equal(acked.length, 0, "no ack while the sink holds the writes");
  assert.ok(calls.includes("pause"), "source paused at max in-flight");
  while (records.length < 40) {
    pending.shift()?.();
    await new Promise((r) => setTimeout(r, 1));
  }
  await run;
  assert.equal(acked.length, 40);
  assert.equal(calls.at(-1), "resume");
  await o.model.close();
});

Deno.test("Pipeline stops after --max-events and leaves later events unacknowledged", async () => {
  const { source, acked } = memorySource([Array.from({ length: 25 }, (_, i) => row(i)), [row(25)]]);
  const { sink, records } = memorySink();
  const o = await setup(10, 4, 12);
  await new Pipeline({ ...o, source, sink, deadLetter: undefined }).run(new AbortController().signal);
  assert.equal(records.length, 12);
  assert.deepEqual(acked.toSorted((a, b) => a - b), Array.from({ length: 12 }, (_, i) => i));
  await o.model.close();
});

Deno.test("Pipeline fails when the sink fails, without acknowledging the failed batch", async () => {
  const { source, acked } = memorySource([Array.from({ length: 5 }, (_, i) => row(i))]);
  const sink: Sink = {
    description: "broken",
    send: () => Promise.reject(new Error("broker unreachable")),
    close: () => Promise.resolve(),
  };
  const o = await setup(5);
  await assert.rejects(
    new Pipeline({ ...o, source, sink, deadLetter: undefined }).run(new AbortController().signal),
    /broker unreachable/,
  );
  assert.equal(acked.length, 0);
  await o.model.close();
});

Deno.test("Pipeline holds the in-flight bound inside one large chunk", async () => {
  // One chunk of 5000 events (a Kafka fetch or a socket read can be that large), a sink that holds
  // every write: the pipeline may take at most batch-size x (max-in-flight + 1) events.
  const { source, acked } = memorySource([Array.from({ length: 5000 }, (_, i) => row(i))]);
  const { sink, records, pending } = memorySink(true);
  const o = await setup(10, 3);
  const run = new Pipeline({ ...o, source, sink, deadLetter: undefined }).run(new AbortController().signal);
  let maxTaken = 0;
  let maxInFlight = 0;
  while (records.length < 5000) {
    await new Promise((r) => setTimeout(r, 2));
    maxTaken = Math.max(maxTaken, o.stats.events - o.stats.acked);
    maxInFlight = Math.max(maxInFlight, o.stats.inFlight);
    pending.shift()?.();
  }
  await run;
  assert.equal(acked.length, 5000);
  assert.ok(maxInFlight <= 3 + 1, `batches in flight peaked at ${maxInFlight}, limit 3 (+1 open batch)`);
  assert.ok(maxTaken <= 10 * (3 + 1), `events held peaked at ${maxTaken}, bound ${10 * (3 + 1)}`);
  await o.model.close();
});

Deno.test("Pipeline ends at once on a fatal failure while the source is idle, acking nothing", async () => {
  const health = new Health();
  const idle: Source = {
    description: "idle",
    async *events(signal: AbortSignal) {
      // Never yields: a filter nobody publishes to. Ends only when the signal aborts.
      await new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
      yield* [];
    },
    pause: () => {},
    resume: () => {},
    close: () => Promise.resolve(),
  };
  const { sink } = memorySink();
  const o = await setup(5);
  const run = new Pipeline({ ...o, source: idle, sink, deadLetter: undefined, health }).run(
    new AbortController().signal,
  );
  setTimeout(() => health.fatal(new Error("not authorised to write to topic t")), 20);
  await assert.rejects(run, /not authorised/);
  await o.model.close();
});

Deno.test("Pipeline dead-letters a prediction the sink refuses for good, and goes on", async () => {
  const { source, acked } = memorySource([Array.from({ length: 6 }, (_, i) => row(i))]);
  const dlq = memorySink();
  const kept: OutRecord[] = [];
  const picky: Sink = {
    description: "picky",
    send(batch) {
      // Refuses the record of event 3 (say, over the topic's size limit), takes the rest.
      const refused = batch.flatMap((r, index) =>
        JSON.parse(r.value).id === 3 ? [{ index, reason: "MESSAGE_TOO_LARGE" }] : []
      );
      kept.push(...batch.filter((r) => JSON.parse(r.value).id !== 3));
      return Promise.resolve(refused);
    },
    close: () => Promise.resolve(),
  };
  const o = await setup(10);
  await new Pipeline({ ...o, source, sink: picky, deadLetter: dlq.sink }).run(new AbortController().signal);
  assert.deepEqual(kept.map((r) => JSON.parse(r.value).id), [0, 1, 2, 4, 5]);
  assert.equal(dlq.records.length, 1);
  const dead = JSON.parse(dlq.records[0].value);
  assert.match(dead.error, /the sink refused the prediction: MESSAGE_TOO_LARGE/);
  assert.equal(dead.payload, row(3));
  assert.equal(acked.length, 6, "all acked: the refused one is durable as a dead letter");
  assert.equal(o.stats.predictions, 5);
  await o.model.close();
});

Deno.test("Pipeline gives up waiting for in-flight batches when abandoned, acking none of them", async () => {
  const { source, acked } = memorySource([Array.from({ length: 20 }, (_, i) => row(i))]);
  const { sink, pending } = memorySink(true); // an outage: nothing becomes durable
  const o = await setup(10);
  const stop = new AbortController();
  const abandon = new AbortController();
  const run = new Pipeline({ ...o, source, sink, deadLetter: undefined }).run(stop.signal, abandon.signal);
  while (pending.length < 2) await new Promise((r) => setTimeout(r, 1));
  stop.abort();
  setTimeout(() => abandon.abort(), 20);
  await run;
  assert.equal(acked.length, 0);
  await o.model.close();
});
