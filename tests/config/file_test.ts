/** Config files: interpolation, validation messages, and how a file becomes run's flags. */
import assert from "node:assert/strict";
import { describeSettings, expandConfig, loadConfig, settingsToArgv } from "../../src/config/file.ts";
import { RUN_FLAGS } from "../../src/cli/run.ts";
import { UsageError } from "../../src/errors.ts";

async function file(text: string): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".yaml" });
  await Deno.writeTextFile(path, text);
  return path;
}

function refused(fn: () => unknown, pattern: RegExp) {
  assert.throws(fn, (e) => e instanceof UsageError && pattern.test(e.message));
}

Deno.test("config: keys are run's flags; values are interpolated from the environment", async () => {
  const path = await file(
    [
      "model: models/car-anomaly.onnx",
      "source: mqtt://${BROKER}/cars/+/sensors?qos=1",
      "sink: kafka://${KAFKA:-127.0.0.1:9092}/out",
      "batch-size: 64",
      "features: [speed, rpm]",
      "quiet: true",
      "key-field: $${literal}",
    ].join("\n"),
  );
  const settings = loadConfig(path, RUN_FLAGS, { BROKER: "10.0.0.1:1883" });
  assert.deepEqual(settings, {
    model: "models/car-anomaly.onnx",
    source: "mqtt://10.0.0.1:1883/cars/+/sensors?qos=1",
    sink: "kafka://127.0.0.1:9092/out",
    "batch-size": 64,
    features: ["speed", "rpm"],
    quiet: true,
    "key-field": "${literal}",
  });
  assert.deepEqual(settingsToArgv(settings), [
    "--model=models/car-anomaly.onnx",
    "--source=mqtt://10.0.0.1:1883/cars/+/sensors?qos=1",
    "--sink=kafka://127.0.0.1:9092/out",
    "--features=speed,rpm",
    "--key-field=${literal}",
    "--batch-size=64",
    "--quiet",
  ]);
});

Deno.test("config: mistakes name the file, the key, what was found and what is allowed", async () => {
  refused(
    () => loadConfig("/no/such/edge.yaml", RUN_FLAGS),
    /^--config \/no\/such\/edge\.yaml: cannot read it/,
  );
  const unknown = await file("model: m.onnx\nbatchsize: 3\nbuffer_max_bytes: 9\n");
  refused(() => loadConfig(unknown, RUN_FLAGS), /'batchsize' is not a setting; did you mean 'batch-size'\?/);
  refused(
    () => loadConfig(unknown, RUN_FLAGS),
    /'buffer_max_bytes' is not a setting; did you mean 'buffer-max-bytes'/,
  );
  const types = await file("model: m.onnx\nbatch-size: [1]\nquiet: yes\n");
  refused(() => loadConfig(types, RUN_FLAGS), /batch-size: found a list, allowed: a string or a number/);
  refused(() => loadConfig(types, RUN_FLAGS), /quiet: found string "yes", allowed: true or false/);
  const list = await file("- a\n- b\n");
  const broken = await file("model: [\n");
  const pipelines = await file("pipelines:\n  cars: {}\n");
  const unset = await file("model: m.onnx\nsink: kafka://${KAFKA_HOST}/x\n");
  refused(
    () => loadConfig(unset, RUN_FLAGS, {}),
    /sink: environment variable KAFKA_HOST is not set \(set it, or write \$\{KAFKA_HOST:-default\}/,
  );
  refused(
    () => loadConfig(list, RUN_FLAGS),
    /expected a mapping of settings .* found a list/,
  );
  refused(() => loadConfig(broken, RUN_FLAGS), /not valid YAML/);
  refused(
    () => loadConfig(pipelines, RUN_FLAGS),
    /several pipelines in one process are not supported yet/,
  );
});

Deno.test("config: the command line's flags override the file's keys", async () => {
  const path = await file("model: a.onnx\nbatch-size: 64\nsink: file:/tmp/x\n");
  const argv = expandConfig(["--source", "-", "--config", path, "--batch-size", "8"], RUN_FLAGS);
  assert.deepEqual(argv, [
    "--model=a.onnx",
    "--sink=file:/tmp/x",
    "--batch-size=64",
    "--source",
    "-",
    "--batch-size",
    "8",
  ]);
  refused(() => expandConfig(["--config"], RUN_FLAGS), /--config needs a file/);
  refused(
    () => expandConfig([`--config=${path}`, "--config", path], RUN_FLAGS),
    /--config may be given once/,
  );
});

Deno.test("config: the effective settings are printed with passwords masked", () => {
  assert.equal(
    describeSettings({ source: "mqtt://edge:s3cret@10.0.0.1:8883/cars/#", "batch-size": 64 }),
    "source: mqtt://edge:***@10.0.0.1:8883/cars/#\nbatch-size: 64",
  );
});

Deno.test("config: the README's run table lists exactly run's flags (the config file's keys)", async () => {
  const readme = await Deno.readTextFile(new URL("../../README.md", import.meta.url));
  const table = readme.slice(
    readme.indexOf("### `edgeinfer run`"),
    readme.indexOf("#### Configuration file"),
  );
  const documented = [...table.matchAll(/^\| `--([a-z-]+)/gm)].map((m) => m[1]).sort();
  assert.deepEqual(documented, [...Object.keys(RUN_FLAGS), "config"].sort());
});
