/**
 * Logs of a run with pipelines against the real Mosquitto: in --log-format json every line of a pipeline,
 * its MQTT source's included, carries the pipeline's name; --log-level debug adds the connects.
 */
import assert from "node:assert/strict";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { spawnCli } from "../cli/run_cli.ts";
import { MQTT_HOSTPORT, publishMqtt, uniqueName } from "./brokers.ts";

Deno.test("pipelines in --log-format json: the MQTT sources' subscribe lines name their pipeline; debug shows connects", async () => {
  const dir = await Deno.makeTempDir();
  const doubles = await linearModelFile({ features: ["a"], weights: [2], bias: 0, name: "doubles" });
  const prefix = uniqueName("logs");
  await Deno.writeTextFile(
    `${dir}/edge.yaml`,
    [
      `model: ${doubles}`,
      "batch-size: 1",
      "log-format: json",
      "pipelines:",
      "  north:",
      `    source: mqtt://${MQTT_HOSTPORT}/${prefix}/north?qos=1&client-id=${prefix}-north`,
      `    sink: file:${dir}/north.jsonl`,
      "  south:",
      `    source: mqtt://${MQTT_HOSTPORT}/${prefix}/south?qos=1&client-id=${prefix}-south`,
      `    sink: file:${dir}/south.jsonl`,
    ].join("\n"),
  );
  const run = spawnCli([
    "run",
    "--config",
    `${dir}/edge.yaml`,
    "--log-level",
    "debug",
    "--status-every",
    "0.2",
  ]);
  try {
    await run.waitForStderr(/"pipeline":"north","msg":"mqtt: subscribed to /);
    await run.waitForStderr(/"pipeline":"south","msg":"mqtt: subscribed to /);
    await publishMqtt(`${prefix}/north`, [`{"a":1}`, `{"a":2}`]);
    await run.waitForStderr(/"pipeline":"north","msg":"status: 2 events acked/);
  } finally {
    run.child.kill("SIGTERM");
    assert.equal(await run.exit(), 0, run.stderr());
  }
  const lines = run.stderr().trim().split("\n").map((line) => JSON.parse(line));
  for (const line of lines) {
    assert.match(line.ts, /^\d{4}-\d\d-\d\dT[\d:.]+Z$/);
    if (line.msg.startsWith("stopping:")) assert.equal(line.pipeline, undefined, "a line of the process");
    else assert.ok(["north", "south"].includes(line.pipeline), JSON.stringify(line));
  }
  const of = (pipeline: string, pattern: RegExp) =>
    lines.filter((l) => l.pipeline === pipeline && pattern.test(l.msg)).map((l) => l.level);
  assert.deepEqual(of("north", /^mqtt: connected to /), ["debug"]);
  assert.deepEqual(of("south", /^mqtt: subscribed to /), ["info"]);
  assert.deepEqual(of("north", /^done: 2 events acked/), ["info"]);
  assert.deepEqual(of("south", /^done: 0 events acked/), ["info"]);
  await Deno.remove(dir, { recursive: true });
});
