/** `run --http` from the command line, without brokers. */
import assert from "node:assert/strict";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { runCli } from "./run_cli.ts";

function assertUsageError(result: { code: number; stderr: string }, message: RegExp) {
  assert.equal(result.code, 2, `exit code (stderr: ${result.stderr})`);
  const lines = result.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line of error, got:\n${result.stderr}`);
  assert.match(lines[0], message);
}

async function fileRun() {
  const dir = await Deno.makeTempDir();
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  await Deno.writeTextFile(`${dir}/in.jsonl`, [0, 1, 2].map((a) => JSON.stringify({ a })).join("\n") + "\n");
  return {
    dir,
    model,
    args: ["--model", model, "--source", `file:${dir}/in.jsonl`, "--sink", `file:${dir}/out.jsonl`],
  };
}

Deno.test("run --http: a file run still ends by itself (the server does not keep the process alive)", async () => {
  const { args } = await fileRun();
  const run = await runCli(["run", ...args, "--http", "127.0.0.1:0"]);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stderr, /serving \/metrics, \/healthz and \/readyz on http:\/\/127\.0\.0\.1:\d+\n/);
  assert.match(run.stderr, /done: 3 events acked/);
});

Deno.test("run --http: a bad address or a taken port is one line naming --http, exit 2", async () => {
  const { args } = await fileRun();
  assertUsageError(
    await runCli(["run", ...args, "--http", "9464"]),
    /^edgeinfer: --http must be HOST:PORT, e\.g\. 127\.0\.0\.1:9464 .*got '9464'$/,
  );
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const port = (taken.addr as Deno.NetAddr).port;
    assertUsageError(
      await runCli(["run", ...args, "--http", `127.0.0.1:${port}`]),
      new RegExp(
        `^edgeinfer: --http 127\\.0\\.0\\.1:${port}: the address is already in use .*choose another port$`,
      ),
    );
  } finally {
    taken.close();
  }
});

Deno.test("run --config with pipelines: http is process-wide (top level or command line, not in a pipeline)", async () => {
  const { dir, model } = await fileRun();
  const pipeline = (extra: string[]) =>
    [
      `model: ${model}`,
      "pipelines:",
      "  x:",
      `    source: file:${dir}/in.jsonl`,
      `    sink: file:${dir}/x-out.jsonl`,
      ...extra,
    ].join("\n");
  await Deno.writeTextFile(`${dir}/inside.yaml`, pipeline(["    http: 127.0.0.1:0"]));
  assertUsageError(
    await runCli(["run", "--config", `${dir}/inside.yaml`]),
    /pipelines\.x\.http: applies to the whole process; move it to the top level$/,
  );
  await Deno.writeTextFile(`${dir}/top.yaml`, "http: 127.0.0.1:0\n" + pipeline([]));
  const top = await runCli(["run", "--config", `${dir}/top.yaml`]);
  assert.equal(top.code, 0, top.stderr);
  assert.match(top.stderr, /serving \/metrics/);
  await Deno.writeTextFile(`${dir}/plain.yaml`, pipeline([]));
  const flag = await runCli(["run", "--config", `${dir}/plain.yaml`, "--http", "127.0.0.1:0"]);
  assert.equal(flag.code, 0, flag.stderr);
  assert.match(flag.stderr, /serving \/metrics/);
});
