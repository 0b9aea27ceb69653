import assert from "node:assert/strict";
import { runCli } from "./run_cli.ts";
import { linearModelFile } from "../fixtures/linear_model.ts";

Deno.test("cli: hot swap and model source flags refuse mistakes with one line naming the flag", async () => {
  const cases: [string[], RegExp][] = [
    [["run", "--source", "-"], /run needs --model PATH or --model-source URL/],
    [
      ["run", "--model", "models/car-anomaly.onnx", "--model-cache", "/tmp/x", "--source", "-"],
      /--model-cache DIR keeps models from --model-source: add --model-source URL/,
    ],
    [
      ["run", "--model-source", "kafka://127.0.0.1:9092/m", "--watch-model", "--source", "-"],
      /--watch-model watches the --model file: add --model PATH/,
    ],
    [
      ["run", "--model-source", "mqtt://127.0.0.1:1883/m", "--source", "-"],
      /--model-source must be kafka:\/\/host:port\/<topic>/,
    ],
    [
      ["run", "--model-source", "kafka://127.0.0.1:9092/m?group=x", "--source", "-"],
      /--model-source has unknown parameter 'group'/,
    ],
    [
      ["model", "publish", "models/car-anomaly.onnx"],
      /model publish needs --to kafka:\/\/host:port\/<topic>/,
    ],
    [
      ["model", "publish", "/nonexistent.onnx", "--to", "kafka://127.0.0.1:9092/m"],
      /'\/nonexistent.onnx' cannot be read/,
    ],
    [
      ["model", "publish", "README.md", "--to", "kafka://127.0.0.1:9092/m"],
      /'README.md' is not an ONNX model/,
    ],
    [
      ["model", "publish", "models/car-anomaly.onnx", "--to", "kafka://127.0.0.1:9092/m?chunk-bytes=0"],
      /chunk-bytes=0 must be a whole number/,
    ],
    [["model", "list"], /model needs an action: publish/],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(args);
    assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
  }
  const bare = await linearModelFile({ features: ["a"], weights: [1], bias: 0, bare: true });
  const r = await runCli(["model", "publish", bare, "--to", "kafka://127.0.0.1:9092/m"]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /has no edgeinfer.version metadata: give --version V/);
  await Deno.remove(bare);
});
