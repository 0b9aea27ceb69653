/**
 * Model hot swap on the real Kafka: Kafka → Kafka with a steady feed over 3 partitions; the model file is
 * replaced and SIGHUP sent (or, with --watch-model, the change alone). Each event is scored once, by one
 * model, and within each input partition the versions change at one point (all v1, then all v2).
 */
import assert from "node:assert/strict";
import { spawnCli } from "../cli/run_cli.ts";
import { linearModel } from "../fixtures/linear_model.ts";
import { createTopic, KAFKA_BROKERS, LiveOutput, produce, SteadyFeed, uniqueName } from "./brokers.ts";
import { assertEachScoredOnce, assertOneSwitch, PARTITIONS, readScored, waitFor } from "./scored.ts";

const KAFKA = KAFKA_BROKERS.join(",");

/** v1 scores a, v2 scores a + 1000: the score tells which model scored an event. */
const V1 = linearModel({ features: ["a"], weights: [1], bias: 0, name: "swap", version: "1" });
const V2 = linearModel({ features: ["a"], weights: [1], bias: 1000, name: "swap", version: "2" });

async function replaceAtomically(path: string, bytes: Uint8Array) {
  await Deno.writeFile(`${path}.tmp`, bytes);
  await Deno.rename(`${path}.tmp`, path);
}

async function start(extra: string[]) {
  const input = uniqueName("swap-in");
  const output = uniqueName("swap-out");
  await createTopic(input, PARTITIONS);
  await createTopic(output, PARTITIONS);
  const dir = await Deno.makeTempDir();
  const model = `${dir}/model.onnx`;
  await Deno.writeFile(model, V1);
  const feed = new SteadyFeed(input, { rate: 600, tickMs: 20, partitions: PARTITIONS });
  const run = spawnCli([
    "run",
    "--model",
    model,
    "--source",
    `kafka://${KAFKA}/${input}?group=${uniqueName("swap")}`,
    "--sink",
    `kafka://${KAFKA}/${output}`,
    "--batch-size",
    "32",
    "--status-every",
    "1",
    ...extra,
  ]);
  const live = await LiveOutput.start(output, readScored);
  return { feed, run, live, model, dir };
}

Deno.test("model swap: SIGHUP after the file was replaced swaps at a batch boundary, no event lost or scored twice", async () => {
  const { feed, run, live, model, dir } = await start([]);
  try {
    await waitFor("predictions of v1", () => live.count > 500, run);
    await replaceAtomically(model, V2);
    run.child.kill("SIGHUP");
    await run.waitForStderr(/model swapped: swap v1 → swap v2 \(sha256 [0-9a-f]{12}…, from .*model\.onnx\)/);
    await waitFor("predictions of v2", () => live.records.filter((r) => r.version === "2").length > 500, run);
    // SIGHUP with the same file: nothing to do.
    run.child.kill("SIGHUP");
    await run.waitForStderr(/model file .* unchanged \(same sha256\): nothing to reload/);
    await feed.stop();
    await waitFor("every event scored", () => live.covered() >= feed.count, run);
    run.child.kill("SIGTERM");
    assert.equal(await run.exit(), 0, run.stderr());
    await new Promise((r) => setTimeout(r, 500)); // a duplicate would have arrived by now
    assertEachScoredOnce(live, feed.count, { "1": 0, "2": 1000 });
    assertOneSwitch(live.records, "1", "2");
  } finally {
    if (run.exited === undefined) run.child.kill("SIGKILL");
    await run.exit();
    await feed.stop().catch(() => {});
    await live.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("model swap: --watch-model refuses a corrupt and an incompatible model with one line each and keeps scoring with v1, then swaps; the reload metrics count each", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const http = `127.0.0.1:${(listener.addr as Deno.NetAddr).port}`;
  listener.close();
  const { feed, run, live, model, dir } = await start(["--watch-model", "--http", http]);
  /** The model metrics of a scrape: reloads by result, and the version of edgeinfer_model_info. */
  const modelMetrics = async () => {
    const text = await (await fetch(`http://${http}/metrics`)).text();
    const reloads = (result: string) =>
      Number(
        new RegExp(`^edgeinfer_model_reloads_total\\{[^}]*result="${result}"[^}]*\\} (\\d+)$`, "m").exec(text)
          ?.[1],
      );
    const version = /^edgeinfer_model_info\{[^}]*version="([^"]*)"/m.exec(text)?.[1];
    return { ok: reloads("ok"), refused: reloads("refused"), failed: reloads("failed"), version };
  };
  try {
    await run.waitForStderr(/watching the model file/);
    await waitFor("predictions of v1", () => live.count > 300, run);
    await replaceAtomically(model, new TextEncoder().encode("this is not an ONNX model"));
    await run.waitForStderr(
      /model reload failed: '.*model\.onnx' is not an ONNX model .*; still scoring with swap v1\n/,
    );
    await replaceAtomically(
      model,
      linearModel({ features: ["a", "b"], weights: [1, 1], bias: 0, name: "swap", version: "3" }),
    );
    await run.waitForStderr(
      /model reload refused: '.*model\.onnx' \(swap v3\) does not fit: input width 2 differs from the running model's 1; still scoring with swap v1\n/,
    );
    // Scoring goes on, with v1.
    const seen = live.count;
    await waitFor("more predictions after the refusals", () => live.count > seen + 300, run);
    assert.ok(live.records.every((r) => r.version === "1"));
    assert.deepEqual(await modelMetrics(), { ok: 0, refused: 1, failed: 1, version: "1" });
    await replaceAtomically(model, V2);
    await run.waitForStderr(/model swapped: swap v1 → swap v2/);
    await waitFor("predictions of v2", () => live.records.some((r) => r.version === "2"), run);
    assert.deepEqual(await modelMetrics(), { ok: 1, refused: 1, failed: 1, version: "2" });
    await feed.stop();
    await waitFor("every event scored", () => live.covered() >= feed.count, run);
    run.child.kill("SIGTERM");
    assert.equal(await run.exit(), 0, run.stderr());
    assertEachScoredOnce(live, feed.count, { "1": 0, "2": 1000 });
    assertOneSwitch(live.records, "1", "2");
    assert.equal(run.stderr().match(/model reload/g)?.length, 2, "one line per refusal");
  } finally {
    if (run.exited === undefined) run.child.kill("SIGKILL");
    await run.exit();
    await feed.stop().catch(() => {});
    await live.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("model swap: with several pipelines, SIGHUP reloads each pipeline's model, each checked on its own", async () => {
  const dir = await Deno.makeTempDir();
  const inputs = { a: uniqueName("swap-a"), b: uniqueName("swap-b") };
  for (const topic of Object.values(inputs)) await createTopic(topic, 1);
  await Deno.writeFile(`${dir}/a.onnx`, V1);
  await Deno.writeFile(`${dir}/b.onnx`, V1);
  await Deno.writeTextFile(
    `${dir}/edge.yaml`,
    [
      "status-every: 0.5",
      "batch-size: 8",
      "pipelines:",
      ...["a", "b"].flatMap((name) => [
        `  ${name}:`,
        `    model: ${dir}/${name}.onnx`,
        `    source: kafka://${KAFKA}/${inputs[name as "a" | "b"]}?group=${uniqueName("swap")}`,
        `    sink: file:${dir}/${name}.out`,
      ]),
    ].join("\n"),
  );
  const events = (from: number) =>
    Array.from({ length: 10 }, (_, i) => ({ value: JSON.stringify({ id: from + i, a: from + i }) }));
  const run = spawnCli(["run", "--config", `${dir}/edge.yaml`]);
  try {
    await produce(inputs.a, events(0));
    await produce(inputs.b, events(0));
    await run.waitForStderr(/\[a\] status: 10 events acked/);
    await run.waitForStderr(/\[b\] status: 10 events acked/);
    await replaceAtomically(`${dir}/a.onnx`, V2);
    await replaceAtomically(
      `${dir}/b.onnx`,
      linearModel({ features: ["b"], weights: [1], bias: 0, name: "swap", version: "4" }),
    );
    run.child.kill("SIGHUP");
    await run.waitForStderr(/\[a\] model swapped: swap v1 → swap v2/);
    await run.waitForStderr(
      /\[b\] model reload refused: .* \(swap v4\) does not fit: features b differ from the running model's a .*; still scoring with swap v1\n/,
    );
    await produce(inputs.a, events(10));
    await produce(inputs.b, events(10));
    await run.waitForStderr(/\[a\] status: 20 events acked/);
    await run.waitForStderr(/\[b\] status: 20 events acked/);
    run.child.kill("SIGTERM");
    assert.equal(await run.exit(), 0, run.stderr());
    const versions = async (name: string) =>
      (await Deno.readTextFile(`${dir}/${name}.out`)).trim().split("\n").map((l) => JSON.parse(l))
        .sort((x, y) => x.id - y.id).map((r) => r.model.version).join("");
    assert.equal(await versions("a"), "1".repeat(10) + "2".repeat(10));
    assert.equal(await versions("b"), "1".repeat(20));
  } finally {
    if (run.exited === undefined) run.child.kill("SIGKILL");
    await run.exit();
    await Deno.remove(dir, { recursive: true });
  }
});
