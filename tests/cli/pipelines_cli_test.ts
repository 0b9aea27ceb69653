/** `pipelines:` from the command line, without brokers: file → file pipelines in one process. */
import assert from "node:assert/strict";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { runCli } from "./run_cli.ts";

function assertUsageError(result: { code: number; stdout: string; stderr: string }, message: RegExp) {
  assert.equal(result.code, 2, `exit code (stderr: ${result.stderr})`);
  const lines = result.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line of error, got:\n${result.stderr}`);
  assert.match(lines[0], message);
}

Deno.test("run --config with pipelines: runs each pipeline with its own model; only process-wide flags may be added", async () => {
  const dir = await Deno.makeTempDir();
  const doubles = await linearModelFile({ features: ["a"], weights: [2], bias: 0, name: "doubles" });
  const triples = await linearModelFile({ features: ["a"], weights: [3], bias: 0, name: "triples" });
  const events = (n: number) =>
    Array.from({ length: n }, (_, id) => JSON.stringify({ id, a: id })).join("\n");
  await Deno.writeTextFile(`${dir}/x.jsonl`, events(30) + "\n");
  await Deno.writeTextFile(`${dir}/y.jsonl`, events(20) + "\n");
  await Deno.writeTextFile(
    `${dir}/edge.yaml`,
    [
      "batch-size: 4",
      `model: ${doubles}`,
      "pipelines:",
      "  x:",
      `    source: file:${dir}/x.jsonl`,
      `    sink: file:${dir}/x-out.jsonl`,
      "  y:",
      `    model: ${triples}`,
      `    source: file:${dir}/y.jsonl`,
      `    sink: file:${dir}/y-out.jsonl`,
      "    batch-size: 7",
    ].join("\n"),
  );
  const run = await runCli(["run", "--config", `${dir}/edge.yaml`, "--status-every", "60"]);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stderr, /\[x\] model doubles .*batch 4,/);
  assert.match(run.stderr, /\[y\] model triples .*batch 7,/);
  assert.match(run.stderr, /\[x\] done: 30 events acked/);
  assert.match(run.stderr, /\[y\] done: 20 events acked/);
  const read = async (name: string) =>
    (await Deno.readTextFile(`${dir}/${name}`)).trim().split("\n").map((l) => JSON.parse(l));
  const x = await read("x-out.jsonl");
  const y = await read("y-out.jsonl");
  assert.equal(x.length, 30);
  assert.equal(y.length, 20);
  for (const r of x) assert.deepEqual([r.model.name, r.score], ["doubles", 2 * Number(r.id)]);
  for (const r of y) assert.deepEqual([r.model.name, r.score], ["triples", 3 * Number(r.id)]);

  // --quiet is process-wide: allowed; a pipeline's flag on the command line is ambiguous: refused.
  const quiet = await runCli(["run", "--config", `${dir}/edge.yaml`, "--quiet"]);
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stderr, "");
  assertUsageError(
    await runCli(["run", "--config", `${dir}/edge.yaml`, "--batch-size", "8"]),
    /--batch-size cannot be given on the command line with .*edge\.yaml's pipelines: set it in the file/,
  );
  // A mistake names pipelines.<name>.<key>, for run and config check alike.
  await Deno.writeTextFile(
    `${dir}/bad.yaml`,
    `pipelines:\n  x:\n    model: ${doubles}\n    source: "-"\n    quiet: true\n`,
  );
  for (const command of [["run", "--config"], ["config", "check"]]) {
    assertUsageError(
      await runCli([...command, `${dir}/bad.yaml`]),
      /pipelines\.x\.quiet: applies to the whole process; move it to the top level/,
    );
  }
  const check = await runCli(["config", "check", `${dir}/edge.yaml`]);
  assert.equal(check.code, 0, check.stderr);
  assert.match(
    check.stdout,
    /^pipelines:\n {2}x:\n {4}model: .*\n {4}source: file:.*x\.jsonl\n {4}sink: file:.*\n {4}batch-size: 4\n {2}y:\n/,
  );
  const example = await runCli(["config", "check", "scripts/edge.pipelines.example.yaml"]);
  assert.equal(example.code, 0, example.stderr);
  await Deno.remove(dir, { recursive: true });
});
