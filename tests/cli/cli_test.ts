import assert from "node:assert/strict";
import { FEATURES } from "../../src/sim/fleet.ts";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { assertSeedScore, runCli, seedFixture } from "./run_cli.ts";

const seed = seedFixture();
if (!seed) console.warn("SKIPPING seed-ksql-udf CLI tests: ../shared/seed-ksql-udf is absent");

/** Asserts a usage error: exit 2, one line on stderr matching `message`, nothing on stdout. */
function assertUsageError(result: { code: number; stdout: string; stderr: string }, message: RegExp) {
  assert.equal(result.code, 2, `exit code (stderr: ${result.stderr})`);
  assert.equal(result.stdout, "");
  const lines = result.stderr.trim().split("\n");
  assert.equal(lines.length, 1, `one line of error, got:\n${result.stderr}`);
  assert.match(lines[0], message);
  assert.doesNotMatch(result.stderr, /\s+at .*\.ts:\d+/, "no stack trace");
}

Deno.test("edgeinfer --help lists the commands; <cmd> --help shows options and examples", async () => {
  const main = await runCli(["--help"]);
  assert.equal(main.code, 0);
  for (const command of ["run", "inspect", "simulate"]) {
    assert.match(main.stdout, new RegExp(`\\n  ${command} `));
  }
  const run = await runCli(["run", "--help"]);
  assert.equal(run.code, 0);
  assert.match(run.stdout, /--batch-size N/);
  assert.match(run.stdout, /Examples/);
  const inspect = await runCli(["help", "inspect"]);
  assert.match(inspect.stdout, /edgeinfer inspect MODEL/);
});

Deno.test("edgeinfer names bad commands, flags, URLs and model paths in one line with exit code 2", async () => {
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  assertUsageError(await runCli(["frobnicate"]), /unknown command 'frobnicate'; commands: run, inspect/);
  assertUsageError(await runCli(["run", "--modle", model]), /Unknown option '--modle'.*edgeinfer run --help/);
  assertUsageError(await runCli(["run", "--source", "-"]), /run needs --model PATH/);
  assertUsageError(
    await runCli(["simulate", "--rate", "-3"]),
    /Option '--rate' argument is ambiguous; .* use '--rate=-XYZ' \(see 'edgeinfer simulate --help'\)/,
  );
  assertUsageError(await runCli(["run", "--model", model]), /run needs --source URL/);
  assertUsageError(
    await runCli(["run", "--model", model, "--source", "http://x/y"]),
    /--source 'http:\/\/x\/y' is not a supported URL/,
  );
  assertUsageError(
    await runCli(["run", "--model", model, "--source", "mqtt://127.0.0.1:1883/t?qso=1"]),
    /--source has unknown parameter 'qso'; allowed: qos, client-id, share, version/,
  );
  // Link settings name the parameter, the range and the default.
  assertUsageError(
    await runCli(["run", "--model", model, "--source", "mqtt://127.0.0.1:1883/t?keepalive=0"]),
    /--source parameter keepalive=0 must be a whole number from 1 to 65535 \(seconds between MQTT pings.*default 15\)/,
  );
  assertUsageError(
    await runCli(["run", "--model", model, "--source", "mqtt://127.0.0.1:1883/t?takeover=3"]),
    /--source takeover=3 needs a shared subscription: add share=GROUP/,
  );
  assertUsageError(
    await runCli(["run", "--model", model, "--source", "mqtt://127.0.0.1:1883/t?share=g&takeover=soon"]),
    /--source parameter takeover=soon must be a whole number from 0 to 3600 .*or off; default 5\)/,
  );
  assertUsageError(
    await runCli([
      "run",
      "--model",
      model,
      "--source",
      "-",
      "--sink",
      "kafka://127.0.0.1:9092/o?request-timeout-ms=5s",
    ]),
    /--sink parameter request-timeout-ms=5s must be a whole number from 1000 to 300000 \(milliseconds/,
  );
  assertUsageError(
    await runCli(["run", "--model", "no/such/model.onnx", "--source", "-"]),
    /--model 'no\/such\/model.onnx' does not exist/,
  );
  assertUsageError(
    await runCli(["run", "--model", model, "--source", "-", "--batch-size", "0"]),
    /--batch-size must be an integer >= 1, got '0'/,
  );
  assertUsageError(
    await runCli(["run", "--model", model, "--source", "-", "--format", "xml"]),
    /--format must be json or delimited, got 'xml'/,
  );
  assertUsageError(
    await runCli(["run", "--model", model, "--source", "-", "--trace-headers", "maybe"]),
    /--trace-headers must be on or off, got 'maybe'/,
  );
  assertUsageError(
    await runCli(["run", "--model", model, "--source", "-", "--sink", "mqtt://127.0.0.1:1883/out/+"]),
    /--sink topic 'out\/\+' must not hold the wildcards \+ or #/,
  );
  const notOnnx = await Deno.makeTempFile({ suffix: ".onnx" });
  await Deno.writeTextFile(notOnnx, "this is not a model\n");
  assertUsageError(await runCli(["run", "--model", notOnnx, "--source", "-"]), /is not an ONNX model/);
  assertUsageError(await runCli(["inspect", notOnnx]), /is not an ONNX model/);
});

Deno.test("edgeinfer run scores JSON from stdin, keys by a field, and dead-letters bad lines to a file", async () => {
  const model = await linearModelFile({
    features: ["speed", "temp"],
    weights: [1, 2],
    bias: 1,
    threshold: 100,
  });
  const dlq = await Deno.makeTempFile({ suffix: ".jsonl" });
  const input = [
    `{"car":"car-1","id":"a","speed":10,"temp":20,"ts":111}`,
    `{"car":"car-2","id":"b","speed":50,"temp":30}`,
    `not json`,
    `{"car":"car-3","speed":1}`,
    "",
  ].join("\n");
  const result = await runCli(
    [
      "run",
      "--model",
      model,
      "--source",
      "-",
      "--key-field",
      "car",
      "--passthrough",
      "ts:ts_in",
      "--dlq",
      `file:${dlq}`,
    ],
    { stdin: input },
  );
  assert.equal(result.code, 0, result.stderr);
  const records = result.stdout.trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(records.map((r) => [r.key, r.id, r.score, r.anomaly, r.threshold, r.ts_in ?? null]), [
    ["car-1", "a", 51, false, 100, 111],
    ["car-2", "b", 111, true, 100, null],
  ]);
  assert.equal(records[0].ts > 1e12, true, "prediction timestamp in ms");
  const dead = (await Deno.readTextFile(dlq)).trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(dead.map((d) => [d.source, d.payload]), [["file:stdin:3", "not json"], [
    "file:stdin:4",
    `{"car":"car-3","speed":1}`,
  ]]);
  assert.match(dead[0].error, /^invalid JSON/);
  assert.equal(dead[1].error, "missing feature 'temp'");
  assert.match(result.stderr, /done: 4 events acked .* 2 predictions, 1 anomalies, 2 dead-lettered/);
});

Deno.test("edgeinfer run --quiet prints records only; a foreign model needs --features for JSON", async () => {
  const bare = await linearModelFile({ features: ["a", "b"], weights: [1, 1], bias: 0, bare: true });
  const refused = await runCli(["run", "--model", bare, "--source", "-"], { stdin: "" });
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /names no input fields .* pass --features a,b,c with its 2 input field names/);
  const ok = await runCli(["run", "--model", bare, "--source", "-", "--features", "x,y", "--quiet"], {
    stdin: `{"x":1,"y":2}\n`,
  });
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stderr, "");
  assert.equal(JSON.parse(ok.stdout).score, 3);
  assert.equal("anomaly" in JSON.parse(ok.stdout), false, "no threshold, no anomaly flag");
});

Deno.test("edgeinfer inspect shows inputs, outputs, metadata, size and sha256", async () => {
  const model = await linearModelFile({
    features: ["speed", "temp"],
    weights: [1, 2],
    bias: 0,
    threshold: 0.5,
    name: "cars",
    version: "7",
  });
  const text = await runCli(["inspect", model]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /input {2}float32\[N, 2\]/);
  assert.match(text.stdout, /score {2}float32\[N\]/);
  assert.match(text.stdout, /threshold 0\.5/);
  assert.match(text.stdout, /0 {2}speed\n\s+1 {2}temp/);
  assert.match(text.stdout, /sha256 {4}[0-9a-f]{64}/);
  const json = JSON.parse((await runCli(["inspect", model, "--json"])).stdout);
  assert.deepEqual(json.inputs, [{ name: "input", type: "float32", shape: ["N", 2] }]);
  assert.equal(json.metadata["edgeinfer.version"], "7");
  assert.deepEqual(json.opsets, [{ domain: "ai.onnx", version: 13 }]);
  assert.equal(json.bytes, (await Deno.stat(model)).size);
});

Deno.test({
  name: "edgeinfer run reproduces every KSQL UDF score from the seed fixture file",
  ignore: !seed,
  async fn() {
    const result = await runCli([
      "run",
      "--model",
      seed!.model,
      "--source",
      `file:${seed!.messages}`,
      "--format",
      "delimited",
      "--sink",
      "-",
    ]);
    assert.equal(result.code, 0, result.stderr);
    const records = result.stdout.trim().split("\n").map((line) => JSON.parse(line));
    const rows = [...seed!.expected].filter(([id]) => Number(id) <= 23);
    assert.equal(records.length, 23);
    for (const [id, score] of rows) {
      const got = records.find((r) => r.id === id);
      assert.ok(got, `a record for event ${id}`);
      assertSeedScore(got.score, score, `event ${id}`);
    }
  },
});

Deno.test("edgeinfer finds a bundled model by its relative path from any working directory", async () => {
  // In a compiled binary, models/ is embedded beside main.ts; the same lookup serves `deno run`.
  const elsewhere = await Deno.makeTempDir();
  const result = await runCli(["inspect", "models/car-anomaly.onnx", "--json"], { cwd: elsewhere });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(JSON.parse(result.stdout).metadata["edgeinfer.name"], "car-anomaly");
  const missing = await runCli(["inspect", "models/none.onnx"], { cwd: elsewhere });
  assertUsageError(missing, /model 'models\/none.onnx' does not exist/);
});

Deno.test("edgeinfer inspect shows the shipped car model's 18 features in the simulator's order, and its threshold", async () => {
  const result = await runCli(["inspect", "models/car-anomaly.onnx"]);
  assert.equal(result.code, 0, result.stderr);
  const listed = [...result.stdout.matchAll(/^\s+\d+ {2}(\w+)$/gm)].map((m) => m[1]);
  assert.deepEqual(listed, [...FEATURES]);
  assert.match(result.stdout, /threshold 0\.\d+/);
});

Deno.test("edgeinfer never prints an MQTT password from a URL, and names an unreadable password-file", async () => {
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  for (
    const [args, message] of [
      [
        ["run", "--model", model, "--source", "mqtt://u:s3cr3t@127.0.0.1:1883"],
        /mqtt:\/\/u:\*\*\*@127.0.0.1:1883/,
      ],
      [["run", "--model", model, "--source", "mqtt://u:s3cr3t@127.0.0.1:99999/t"], /is not a valid URL/],
      [["run", "--model", model, "--source", "kafka://u:s3cr3t@127.0.0.1:9092/t"], /has user info/],
      [["run", "--model", model, "--source", "-", "--sink", "http://u:s3cr3t@x/t"], /not a supported URL/],
      [
        ["simulate", "--count", "1", "--target", "mqtt://u:s3cr3t@127.0.0.1:1883"],
        /u:\*\*\*@.* has no topic/,
      ],
    ] as [string[], RegExp][]
  ) {
    const result = await runCli(args);
    assertUsageError(result, message);
    assert.doesNotMatch(result.stderr, /s3cr3t/);
  }
  assertUsageError(
    await runCli([
      "run",
      "--model",
      model,
      "--source",
      "mqtt://u@127.0.0.1:1883/t?password-file=/nonexistent/mqtt.pw",
    ]),
    /--source password-file=\/nonexistent\/mqtt.pw cannot be read/,
  );
  assertUsageError(
    await runCli([
      "simulate",
      "--count",
      "1",
      "--target",
      "mqtt://u@127.0.0.1:1883/t?password-file=/nonexistent/pw",
    ]),
    /--target password-file=\/nonexistent\/pw cannot be read/,
  );
  // The environment variable reaches the source's credentials (here: refused without a user name at MQTT 3.1.1).
  assertUsageError(
    await runCli(["run", "--model", model, "--source", "mqtt://127.0.0.1:1883/t?version=4"], {
      env: { EDGEINFER_MQTT_PASSWORD: "s3cr3t" },
    }),
    /--source has a password \(from EDGEINFER_MQTT_PASSWORD\) but no user name/,
  );
});

Deno.test("edgeinfer run --config FILE takes its settings from the file, the command line overriding it", async () => {
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  const dir = await Deno.makeTempDir();
  const events = Array.from({ length: 10 }, (_, i) => JSON.stringify({ id: i, a: i })).join("\n") + "\n";
  await Deno.writeTextFile(`${dir}/events.jsonl`, events);
  await Deno.writeTextFile(
    `${dir}/edge.yaml`,
    [
      `model: ${model}`,
      `source: file:\${EVENTS}`,
      `sink: file:${dir}/from-file.jsonl`,
      "batch-size: 4",
      "quiet: true",
    ].join("\n"),
  );
  const env = { EVENTS: `${dir}/events.jsonl` };
  const check = await runCli(["config", "check", `${dir}/edge.yaml`], { env });
  assert.equal(check.code, 0, check.stderr);
  assert.match(check.stdout, new RegExp(`source: file:${dir}/events.jsonl`));
  const run = await runCli(["run", "--config", `${dir}/edge.yaml`], { env });
  assert.equal(run.code, 0, run.stderr);
  assert.equal(run.stderr, "", "quiet: true from the file");
  assert.equal((await Deno.readTextFile(`${dir}/from-file.jsonl`)).trim().split("\n").length, 10);
  // A flag on the command line wins over the file's key.
  const override = await runCli(
    ["run", "--config", `${dir}/edge.yaml`, "--sink", `file:${dir}/from-flag.jsonl`],
    { env },
  );
  assert.equal(override.code, 0, override.stderr);
  assert.equal((await Deno.readTextFile(`${dir}/from-flag.jsonl`)).trim().split("\n").length, 10);
  // A mistake is one line naming the key, exit 2, for run and for config check alike.
  await Deno.writeTextFile(`${dir}/bad.yaml`, `model: ${model}\nsource: "-"\nbach-size: 4\n`);
  assertUsageError(
    await runCli(["run", "--config", `${dir}/bad.yaml`]),
    /'bach-size' is not a setting; did you mean 'batch-size'\?/,
  );
  assertUsageError(await runCli(["config", "check", `${dir}/bad.yaml`]), /'bach-size' is not a setting/);
  // The shipped example is valid.
  const example = await runCli(["config", "check", "scripts/edge.example.yaml"]);
  assert.equal(example.code, 0, example.stderr);
  await Deno.remove(dir, { recursive: true });
});
