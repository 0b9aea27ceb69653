import assert from "node:assert/strict";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { runCli } from "./run_cli.ts";

/** score = temp, threshold 50: a reading is anomalous when its temp is over 50. */
async function tempModel(): Promise<string> {
  return await linearModelFile({ features: ["temp"], weights: [1], bias: 0, threshold: 50 });
}

Deno.test("edgeinfer run --alert-hysteresis: records carry each device's alert, file → file", async () => {
  const model = await tempModel();
  const input = await Deno.makeTempFile({ suffix: ".jsonl" });
  const output = await Deno.makeTempFile({ suffix: ".jsonl" });
  // car-1: A . A A . . . (2 of 3 opens at its 3rd reading, 3 normals close it); car-2: isolated anomalies.
  const car1 = [90, 10, 90, 90, 10, 10, 10];
  const car2 = [90, 10, 10, 90, 10, 10, 90];
  const lines: string[] = [];
  for (let i = 0; i < car1.length; i++) {
    lines.push(
      JSON.stringify({ car: "car-1", temp: car1[i] }),
      JSON.stringify({ car: "car-2", temp: car2[i] }),
    );
  }
  await Deno.writeTextFile(input, lines.join("\n") + "\n");
  const result = await runCli([
    "run",
    "--model",
    model,
    "--source",
    `file:${input}`,
    "--sink",
    `file:${output}`,
    "--key-field",
    "car",
    "--alert-hysteresis",
    "2/3,3",
    "--batch-size",
    "3", // the state crosses batches
  ]);
  assert.equal(result.code, 0, result.stderr);
  const records = (await Deno.readTextFile(output)).trim().split("\n").map((line) => JSON.parse(line));
  const of = (car: string) =>
    records.filter((r) => r.key === car).map((r) =>
      `${r.anomaly ? "A" : "."}${r.alert.changed ? (r.alert.open ? "O" : "C") : r.alert.open ? "o" : "-"}`
    ).join(" ");
  assert.equal(of("car-1"), "A- .- AO Ao .o .o .C");
  assert.equal(of("car-2"), "A- .- .- A- .- .- A-");
  const opened = records.find((r) => r.alert.changed && r.alert.open);
  assert.equal(opened.alert.since, opened.ts, "since: the opening reading's ts");
  assert.deepEqual(Object.keys(opened), ["key", "score", "anomaly", "threshold", "alert", "model", "ts"]);
  assert.match(result.stderr, /device alerts: 1 opened, 1 closed, 0 open, 2 devices tracked/);

  // A shadow model neither moves the devices' alerts nor carries them: the same records, the same summary.
  const shadowSink = await Deno.makeTempFile({ suffix: ".jsonl" });
  const always = await linearModelFile({ features: ["temp"], weights: [0], bias: 99, threshold: 50 });
  const shadowed = await runCli([
    "run",
    "--model",
    model,
    "--source",
    `file:${input}`,
    "--key-field",
    "car",
    "--alert-hysteresis",
    "2/3,3",
    "--batch-size",
    "3",
    "--shadow-model",
    always,
    "--shadow-sink",
    `file:${shadowSink}`,
  ]);
  assert.equal(shadowed.code, 0, shadowed.stderr);
  const production = shadowed.stdout.trim().split("\n").map((line) => JSON.parse(line));
  const openAndChanged = (
    r: { alert: { open: boolean; changed: boolean } },
  ) => [r.alert.open, r.alert.changed];
  assert.deepEqual(production.map(openAndChanged), records.map(openAndChanged));
  assert.match(shadowed.stderr, /device alerts: 1 opened, 1 closed, 0 open, 2 devices tracked/);
  const shadowRecords = (await Deno.readTextFile(shadowSink)).trim().split("\n");
  // (A shadow behind production skips batches: at least one was written.)
  assert.ok(shadowRecords.length > 0 && shadowRecords[0].startsWith('{"key"'), shadowRecords[0]);
  assert.equal(shadowRecords.some((line) => line.includes('"alert"')), false);

  // Without the option the records have no alert field.
  const plain = await runCli(["run", "--model", model, "--source", `file:${input}`, "--key-field", "car"]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.equal(plain.stdout.includes('"alert"'), false);
});

Deno.test("edgeinfer run --alert-hysteresis: bad values are refused in one line naming the flag", async () => {
  const model = await tempModel();
  const bare = await linearModelFile({ features: ["temp"], weights: [1], bias: 0 });
  const cases: [string[], RegExp][] = [
    [["--alert-hysteresis", "3/2,1"], /^edgeinfer: --alert-hysteresis must be K\/N,M .* got '3\/2,1'$/],
    [
      ["--alert-hysteresis", "2/40,1"],
      /^edgeinfer: --alert-hysteresis must be K\/N,M with 1 <= K <= N <= 32/,
    ],
    [["--alert-devices", "10"], /^edgeinfer: --alert-devices bounds --alert-hysteresis's state: add/],
    [["--alert-hysteresis", "2/3,1", "--alert-idle", "soon"], /^edgeinfer: --alert-idle must be a duration/],
    [
      ["--alert-hysteresis", "2/3,1", "--alert-devices", "0"],
      /^edgeinfer: --alert-devices must be an integer >= 1/,
    ],
    [["--alert-hysteresis", "2/3,1", "--passthrough", "alert"], /'alert' clashes .* alert:alert_in/],
  ];
  for (const [flags, message] of cases) {
    const result = await runCli(["run", "--model", model, "--source", "-", ...flags], { stdin: "" });
    assert.equal(result.code, 2, `${flags.join(" ")}: ${result.stderr}`);
    assert.equal(result.stderr.trim().split("\n").length, 1, result.stderr);
    assert.match(result.stderr.trim(), message);
  }
  const noThreshold = await runCli(["run", "--model", bare, "--source", "-", "--alert-hysteresis", "2/3,1"], {
    stdin: "",
  });
  assert.equal(noThreshold.code, 2, noThreshold.stderr);
  assert.match(
    noThreshold.stderr,
    /--alert-hysteresis counts anomalies, .* has no threshold: pass --threshold X/,
  );
});
