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
  topicEnds,
  uniqueName,
} from "./brokers.ts";

const KAFKA = KAFKA_BROKERS.join(",");

async function waitForCommittedEnd(group: string, topic: string, ms = 60_000): Promise<void> {
  const end = await topicEnds(topic);
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    const committed = await committedOffsets(group, topic);
    if ([...end].every(([partition, offset]) => committed.get(partition) === offset)) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`group ${group} did not commit up to the end of ${topic} within ${ms} ms`);
}

Deno.test("--exactly-once: a run killed with SIGKILL and restarted gives each event's prediction or dead letter exactly once", async () => {
  const input = uniqueName("eos-in");
  const out = uniqueName("eos-out");
  const dlq = uniqueName("eos-dlq");
  const group = uniqueName("edgeinfer");
  const total = 6000;
  const bad = (i: number) => i % 100 === 7; // 60 undecodable events: dead letters
  await createTopic(input, 2);
  await produce(
    input,
    Array.from({ length: total }, (_, i) => ({
      key: `k${i % 5}`,
      value: bad(i) ? `not json ${i}` : JSON.stringify({ id: i, a: i }),
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
    "4", // slow enough that the kill lands mid-stream, with a transaction open
    "--status-every",
    "0.2",
  ];
  const first = spawnCli(args);
  await first.waitForStderr(/status: [1-9]\d* events acked/);
  first.child.kill("SIGKILL");
  await first.exit();
  const committedBefore = [...(await committedOffsets(group, input)).values()].reduce(
    (a, b) => a + Math.max(b, 0),
    0,
  );
  assert.ok(committedBefore < total, `killed mid-stream (${committedBefore} of ${total} offsets committed)`);

  const second = spawnCli(args);
  await waitForCommittedEnd(group, input).catch((e) => {
    try {
      second.child.kill("SIGKILL");
    } catch { /* already ended */ }
    throw new Error(`${e.message}; second run's stderr:\n${second.stderr()}`);
  });
  second.child.kill("SIGTERM");
  assert.equal(await second.exit(), 0, second.stderr());
  assert.match(second.stderr(), /exactly once/);

  // Read well past the expected count: a duplicate would show up as an extra record.
  const predictions = await consume(out, total * 2, 6000);
  const ids = predictions.map((r) => JSON.parse(r.value).id as number);
  assert.equal(new Set(ids).size, total - 60, "every good event has a prediction");
  const seen = new Map<number, number>();
  for (const id of ids) seen.set(id, (seen.get(id) ?? 0) + 1);
  const twice = [...seen].filter(([, n]) => n > 1).map(([id]) => id);
  assert.equal(
    ids.length,
    total - 60,
    `and only one: no duplicate in the read_committed output (${twice.length} duplicated, e.g. ${
      twice.slice(0, 10)
    }; ` +
      `second run: ${
        second.stderr().split("\n").filter((l) => !/status:/.test(l)).slice(0, 40).join(
          "\n",
        )
      })`,
  );
  const deadLetters = await consume(dlq, total, 4000);
  assert.equal(deadLetters.length, 60, "every bad event has exactly one dead letter");
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
