/**
 * --exactly-once on the real broker: predictions, dead letters and input offsets in one transaction,
 * checked with kafkajs as a read_committed consumer (its default isolation).
 */
import assert from "node:assert/strict";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { runCli, spawnCli } from "../cli/run_cli.ts";
import {
  committedOffsets,
  consume,
  createTopic,
  KAFKA_BROKERS,
  MQTT_HOSTPORT,
  produce,
  uniqueName,
  waitForCommittedEnd,
} from "./brokers.ts";

const KAFKA = KAFKA_BROKERS.join(",");

const TOTAL = 6000;
const BAD = 60; // every 100th event is undecodable: a dead letter

/** Topics filled with TOTAL events (BAD of them undecodable) and the arguments of an exactly-once run. */
async function scenario() {
  const input = uniqueName("eos-in");
  const out = uniqueName("eos-out");
  const dlq = uniqueName("eos-dlq");
  const group = uniqueName("edgeinfer");
  await createTopic(input, 2);
  await produce(
    input,
    Array.from({ length: TOTAL }, (_, i) => ({
      key: `k${i % 5}`,
      value: i % 100 === 7 ? `not json ${i}` : JSON.stringify({ id: i, a: i }),
    })),
  );
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  const args = [
    "run",
    "--model",
    model,
    "--source",
    `kafka://${KAFKA}/${input}?group=${group}`,
    "--sink",
    `kafka://${KAFKA}/${out}`,
    "--dlq",
    `kafka://${KAFKA}/${dlq}`,
    "--exactly-once",
    "--batch-size",
    "4", // slow enough that the fault lands mid-stream, with a transaction open
    "--status-every",
    "0.2",
  ];
  return { input, out, dlq, group, args };
}

/** Committed offsets of the group, summed over the partitions. */
async function committedCount(group: string, input: string): Promise<number> {
  return [...(await committedOffsets(group, input)).values()].reduce((a, b) => a + Math.max(b, 0), 0);
}

/** Waits until `run` committed the whole input, stops it with SIGTERM (exit 0). */
async function finish(run: ReturnType<typeof spawnCli>, group: string, input: string): Promise<void> {
  await waitForCommittedEnd(group, input).catch((e) => {
    try {
      run.child.kill("SIGKILL");
    } catch { /* already ended */ }
    throw new Error(`${e.message}; the run's stderr:\n${run.stderr()}`);
  });
  run.child.kill("SIGTERM");
  assert.equal(await run.exit(), 0, run.stderr());
  assert.match(run.stderr(), /exactly once/);
}

/** The read_committed output has exactly one prediction per good event and one dead letter per bad one. */
async function assertExactlyOnce(out: string, dlq: string, stderr: string): Promise<void> {
  // Read well past the expected count: a duplicate would show up as an extra record.
  const predictions = await consume(out, TOTAL * 2, 6000);
  const ids = predictions.map((r) => JSON.parse(r.value).id as number);
  assert.equal(new Set(ids).size, TOTAL - BAD, "every good event has a prediction");
  const seen = new Map<number, number>();
  for (const id of ids) seen.set(id, (seen.get(id) ?? 0) + 1);
  const twice = [...seen].filter(([, n]) => n > 1).map(([id]) => id);
  const log = stderr.split("\n").filter((l) => !/status:/.test(l)).slice(0, 40).join("\n");
  assert.equal(
    ids.length,
    TOTAL - BAD,
    `and only one: no duplicate in the read_committed output (${twice.length} duplicated, e.g. ` +
      `${twice.slice(0, 10)}); stderr:\n${log}`,
  );
  const deadLetters = await consume(dlq, TOTAL, 4000);
  assert.equal(deadLetters.length, BAD, "every bad event has exactly one dead letter");
}

Deno.test("--exactly-once: a run killed with SIGKILL and restarted gives each event's prediction or dead letter exactly once", async () => {
  const { input, out, dlq, group, args } = await scenario();
  const first = spawnCli(args);
  await first.waitForStderr(/status: [1-9]\d* events acked/);
  first.child.kill("SIGKILL");
  await first.exit();
  const before = await committedCount(group, input);
  assert.ok(before < TOTAL, `killed mid-stream (${before} of ${TOTAL} offsets committed)`);

  const second = spawnCli(args);
  await finish(second, group, input);
  await assertExactlyOnce(out, dlq, second.stderr());
});

Deno.test("--exactly-once: a run stalled past the group's session timeout carries on, each event still exactly once", async () => {
  const { input, out, dlq, group, args } = await scenario();
  const run = spawnCli(args);
  await run.waitForStderr(/status: [1-9]\d* events acked/);
  // Frozen for longer than the consumer's 10 s session: the group evicts it, its open transaction's
  // offsets are no longer its to commit.
  Deno.kill(run.child.pid, "SIGSTOP");
  const before = await committedCount(group, input);
  await new Promise((r) => setTimeout(r, 13_000));
  Deno.kill(run.child.pid, "SIGCONT");
  assert.ok(before < TOTAL, `stalled mid-stream (${before} of ${TOTAL} offsets committed)`);
  await finish(run, group, input);
  await assertExactlyOnce(out, dlq, run.stderr());
});

Deno.test("--exactly-once is refused for an MQTT source, with the reason", async () => {
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  const result = await runCli([
    "run",
    "--model",
    model,
    "--source",
    `mqtt://${MQTT_HOSTPORT}/cars/+`,
    "--sink",
    `kafka://${KAFKA}/x`,
    "--exactly-once",
  ]);
  assert.equal(result.code, 2, result.stderr);
  assert.match(
    result.stderr,
    /--exactly-once needs --source to be a Kafka topic .*MQTT and files cannot take part/,
  );
  assert.doesNotMatch(result.stderr, / {4}at /, "no stack trace");
});
