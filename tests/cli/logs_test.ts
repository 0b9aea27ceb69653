/** The logger (src/log.ts) and run's --log-format, --log-level, --log-timestamps and --quiet. */
import assert from "node:assert/strict";
import { Logger } from "../../src/log.ts";
import { Health } from "../../src/pipeline/health.ts";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { runCli } from "./run_cli.ts";

const SECRET = "s3cr3t-Pa55";

function capture(settings: ConstructorParameters<typeof Logger>[0]) {
  const lines: string[] = [];
  return { lines, log: new Logger(settings, (line) => lines.push(line)) };
}

Deno.test("Logger text: today's 'edgeinfer: ' lines, [name] for a pipeline, levels filtered, timestamps on request", () => {
  const { lines, log } = capture({});
  log.info("model m (2 features)");
  log.child("cars").warn("Kafka sink: connection refused; retrying until it recovers");
  log.debug("not shown at info");
  log.error("error: boom", { extra: 1 });
  assert.deepEqual(lines, [
    "edgeinfer: model m (2 features)\n",
    "edgeinfer: [cars] Kafka sink: connection refused; retrying until it recovers\n",
    "edgeinfer: error: boom\n",
  ]);
  const stamped = capture({ timestamps: true });
  stamped.log.info("hello");
  assert.match(stamped.lines[0], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z edgeinfer: hello\n$/);
});

Deno.test("Logger json: one object a line with ts, level, pipeline, msg and fields; children follow configure()", () => {
  const { lines, log } = capture({ format: "json", level: "debug" });
  const cars = log.child("cars");
  cars.info("status: 3 events acked", { acked: 3, msg: "not overriding", ts: "no" });
  log.debug("batches: 1 dispatched");
  log.configure({ level: "warn" });
  cars.info("hidden now");
  assert.equal(cars.enabled("info"), false);
  assert.equal(cars.enabled("warn"), true);
  cars.warn("still shown");
  assert.equal(lines.length, 3);
  const [status, debug, warn] = lines.map((line) => {
    assert.ok(line.endsWith("\n") && !line.slice(0, -1).includes("\n"), "one line");
    return JSON.parse(line);
  });
  assert.deepEqual(Object.keys(status), ["ts", "level", "pipeline", "msg", "acked"]);
  assert.match(status.ts, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  assert.deepEqual([status.level, status.pipeline, status.msg, status.acked], [
    "info",
    "cars",
    "status: 3 events acked",
    3,
  ]);
  assert.deepEqual(
    debug,
    { ts: debug.ts, level: "debug", msg: "batches: 1 dispatched" },
    "no pipeline field",
  );
  assert.deepEqual([warn.level, warn.pipeline], ["warn", "cars"]);
});

Deno.test("Logger masks a password in a URL in either format, also in fields; Health reports outages as warn", () => {
  for (const format of ["text", "json"] as const) {
    const { lines, log } = capture({ format });
    log.error(`MQTT broker mqtt://edge:${SECRET}@127.0.0.1:1883 refused`, {
      url: `kafka://u:${SECRET}@h:9092/t`,
    });
    const health = new Health(undefined, log.child("cars"));
    health.waiting(`Kafka sink kafka://u:${SECRET}@h:9092`, "connection refused");
    const all = lines.join("");
    assert.doesNotMatch(all, new RegExp(SECRET), format);
    assert.match(all, /mqtt:\/\/edge:\*\*\*@127\.0\.0\.1:1883/);
    assert.equal(lines.length, 2);
    if (format === "json") assert.equal(JSON.parse(lines[1]).level, "warn");
    else {assert.match(
        lines[1],
        /^edgeinfer: \[cars\] Kafka sink kafka:\/\/u:\*\*\*@h:9092: connection refused; retrying/,
      );}
  }
  // JSON: each string is masked on its own, so masking never cuts across the line's quotes.
  const json = capture({ format: "json" });
  json.log.info("broker mqtt://h", { note: "u:p@x", url: `mqtt://u:${SECRET}@h/t` });
  assert.deepEqual(JSON.parse(json.lines[0]).note, "u:p@x");
  assert.deepEqual(JSON.parse(json.lines[0]).url, "mqtt://u:***@h/t");
  const messages: string[] = [];
  Logger.messages((m) => messages.push(m)).debug(`at mqtt://a:${SECRET}@b/t`);
  assert.deepEqual(messages, ["at mqtt://a:***@b/t"]);
});

const EVENTS = [`{"a":1}`, `{"a":2}`, "not json", `{"a":3}`].join("\n") + "\n";

async function model() {
  return await linearModelFile({ features: ["a"], weights: [2], bias: 0, name: "doubles" });
}

Deno.test("run --log-format json: every stderr line is an object with ts, level, msg; the summary carries counters", async () => {
  const result = await runCli(["run", "--model", await model(), "--source", "-", "--log-format", "json"], {
    stdin: EVENTS,
  });
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout.trim().split("\n").length, 3, "records stay on stdout");
  const lines = result.stderr.trim().split("\n").map((line) => JSON.parse(line));
  for (const line of lines) {
    assert.equal(typeof line.ts, "string");
    assert.ok(["error", "warn", "info", "debug"].includes(line.level));
    assert.equal(typeof line.msg, "string");
    assert.equal("pipeline" in line, false, "one pipeline: no pipeline field");
  }
  assert.deepEqual(lines.map((l) => [l.level, l.msg.split(" ")[0]]), [
    ["info", "model"],
    ["warn", "dropping"],
    ["info", "done:"],
  ]);
  assert.deepEqual([lines[2].acked, lines[2].predictions, lines[2].deadLettered], [4, 3, 1]);
  // A usage error is a JSON line too once the flags were read; exit code unchanged.
  const bad = await runCli(["run", "--model", "/nonexistent.onnx", "--source", "-", "--log-format", "json"], {
    stdin: "",
  });
  assert.equal(bad.code, 2, bad.stderr);
  const error = JSON.parse(bad.stderr);
  assert.equal(error.level, "error");
  assert.match(error.msg, /nonexistent\.onnx/);
  // A bad value names the flag.
  const refused = await runCli(["run", "--model", "m", "--source", "-", "--log-format", "xml"]);
  assert.equal(refused.code, 2);
  assert.match(refused.stderr, /^edgeinfer: --log-format must be text or json, got 'xml'\n$/);
});

Deno.test("run --log-level warn hides start, status and summary; --quiet leaves only errors; --log-level wins over --quiet", async () => {
  const path = await model();
  const run = (...flags: string[]) =>
    runCli(["run", "--model", path, "--source", "-", "--status-every", "0.001", ...flags], { stdin: EVENTS });
  const warn = await run("--log-level", "warn");
  assert.equal(warn.code, 0, warn.stderr);
  assert.equal(
    warn.stderr,
    "edgeinfer: dropping undecodable event (no --dlq set): invalid JSON: " +
      warn.stderr.split("invalid JSON: ")[1],
  );
  assert.equal(warn.stderr.trim().split("\n").length, 1, warn.stderr);
  const quiet = await run("--quiet");
  assert.equal(quiet.code, 0, quiet.stderr);
  assert.equal(quiet.stderr, "");
  const debug = await run("--quiet", "--log-level", "debug", "--log-timestamps");
  assert.equal(debug.code, 0, debug.stderr);
  assert.match(debug.stderr, /^\d{4}-\d\d-\d\dT[\d:.]+Z edgeinfer: model doubles/);
  assert.match(debug.stderr, /Z edgeinfer: done: 4 events acked/);
  // Errors still show with --quiet.
  const failed = await runCli([
    "run",
    "--model",
    path,
    "--source",
    "-",
    "--sink",
    "file:/nonexistent/dir/x",
    "--quiet",
  ], {
    stdin: EVENTS,
  });
  assert.notEqual(failed.code, 0);
  assert.match(failed.stderr, /^edgeinfer: .*\/nonexistent\/dir\/x/);
});

Deno.test("run: a password in a URL never reaches stderr, in text or json", async () => {
  const path = await model();
  for (const format of ["text", "json"]) {
    // A usage error quoting the URL (port out of range): masked.
    const bad = await runCli([
      "run",
      "--model",
      path,
      "--source",
      `mqtt://edge:${SECRET}@127.0.0.1:99999/cars/+/sensors`,
      "--log-format",
      format,
    ]);
    assert.equal(bad.code, 2, bad.stderr);
    assert.match(bad.stderr, /\*\*\*@127\.0\.0\.1:99999/);
    // A run that waits for the broker, then gives up: start line, outages, the error.
    const down = await runCli([
      "run",
      "--model",
      path,
      "--source",
      `mqtt://edge:${SECRET}@127.0.0.1:1/cars/+/sensors`,
      "--give-up-after",
      "500ms",
      "--log-format",
      format,
    ]);
    assert.equal(down.code, 1, down.stderr);
    assert.match(down.stderr, /gave up after/);
    assert.doesNotMatch(bad.stderr + down.stderr, new RegExp(SECRET), format);
  }
});

Deno.test("run with pipelines: every line carries its pipeline; log flags are process-wide", async () => {
  const dir = await Deno.makeTempDir();
  const path = await model();
  await Deno.writeTextFile(`${dir}/x.jsonl`, EVENTS);
  await Deno.writeTextFile(`${dir}/y.jsonl`, EVENTS);
  await Deno.writeTextFile(
    `${dir}/edge.yaml`,
    [
      `model: ${path}`,
      "log-format: json",
      "pipelines:",
      "  x:",
      `    source: file:${dir}/x.jsonl`,
      `    sink: file:${dir}/x-out.jsonl`,
      "  y:",
      `    source: file:${dir}/y.jsonl`,
      `    sink: file:${dir}/y-out.jsonl`,
    ].join("\n"),
  );
  const run = await runCli(["run", "--config", `${dir}/edge.yaml`, "--log-level", "warn"]);
  assert.equal(run.code, 0, run.stderr);
  const lines = run.stderr.trim().split("\n").map((line) => JSON.parse(line));
  assert.deepEqual(lines.map((l) => [l.level, l.pipeline]).sort(), [["warn", "x"], ["warn", "y"]]);
  await Deno.writeTextFile(
    `${dir}/bad.yaml`,
    `model: ${path}\npipelines:\n  x:\n    source: file:${dir}/x.jsonl\n    log-level: debug\n`,
  );
  const bad = await runCli(["run", "--config", `${dir}/bad.yaml`]);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /pipelines\.x\.log-level: applies to the whole process; move it to the top level/);
  await Deno.remove(dir, { recursive: true });
});
