/** Config files: interpolation, validation messages, and how a file becomes run's flags. */
import assert from "node:assert/strict";
import {
  describeConfig,
  describeSettings,
  expandConfig,
  loadConfig,
  settingsToArgv,
} from "../../src/config/file.ts";
import { checkedPipelines, RUN_FLAGS } from "../../src/cli/run.ts";
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
  const { settings } = loadConfig(path, RUN_FLAGS, { BROKER: "10.0.0.1:1883" });
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

const TWO_PIPELINES = [
  "quiet: true",
  "shutdown-timeout: 20s",
  "sink: kafka://${KAFKA:-127.0.0.1:9092}/predictions",
  "batch-size: 64",
  "pipelines:",
  "  cars:",
  "    model: models/car-anomaly.onnx",
  "    source: mqtt://edge:s3cret@127.0.0.1:1883/cars/+/sensors?qos=1",
  "    key-field: car",
  "  pumps:",
  "    model: pumps.onnx",
  "    source: kafka://127.0.0.1:9092/pumps?group=pumps",
  "    sink: file:/tmp/pumps.jsonl",
  "    batch-size: 8",
].join("\n");

Deno.test("config: pipelines: each inherits the top level's keys, its own winning; process keys stay on top", async () => {
  const config = loadConfig(await file(TWO_PIPELINES), RUN_FLAGS, { KAFKA: "10.0.0.2:9092" });
  assert.deepEqual(config.settings, {
    quiet: true,
    "shutdown-timeout": "20s",
    sink: "kafka://10.0.0.2:9092/predictions",
    "batch-size": 64,
  });
  assert.deepEqual(config.pipelines, {
    cars: {
      model: "models/car-anomaly.onnx",
      source: "mqtt://edge:s3cret@127.0.0.1:1883/cars/+/sensors?qos=1",
      sink: "kafka://10.0.0.2:9092/predictions",
      "key-field": "car",
      "batch-size": 64,
    },
    pumps: {
      model: "pumps.onnx",
      source: "kafka://127.0.0.1:9092/pumps?group=pumps",
      sink: "file:/tmp/pumps.jsonl",
      "batch-size": 8,
    },
  });
  const checked = checkedPipelines("edge.yaml", config.pipelines!);
  assert.equal(checked.get("cars")!.batchSize, 64);
  assert.equal(checked.get("pumps")!.batchSize, 8);
  // config check's output: process keys, then each pipeline's effective settings, secrets masked.
  const described = describeConfig(config);
  assert.match(
    described,
    /^shutdown-timeout: 20s\nquiet: true\npipelines:\n {2}cars:\n {4}model: models\/car-anomaly\.onnx\n/,
  );
  assert.match(described, /\n {4}source: mqtt:\/\/edge:\*\*\*@127\.0\.0\.1:1883\/cars/);
  assert.doesNotMatch(described, /s3cret/);
  assert.match(
    described,
    /\n {2}pumps:\n {4}model: pumps\.onnx\n {4}source: kafka:.*\n {4}sink: file:\/tmp\/pumps\.jsonl\n {4}batch-size: 8$/,
  );
});

Deno.test("config: pipelines: a mistake names pipelines.<name>.<key>", async () => {
  const load = async (text: string) => {
    const path = await file(text);
    return () => checkedPipelines(path, loadConfig(path, RUN_FLAGS).pipelines!);
  };
  const pipeline = (...lines: string[]) =>
    ["pipelines:", "  cars:", "    model: m.onnx", "    source: '-'", ...lines.map((l) => `    ${l}`)].join(
      "\n",
    );
  refused(
    await load(pipeline("batch-size: [1]")),
    /pipelines\.cars\.batch-size: found a list, allowed: a string/,
  );
  refused(
    await load(pipeline("bach-size: 4")),
    /pipelines\.cars: 'bach-size' is not a setting; did you mean 'batch-size'\?/,
  );
  refused(
    await load(pipeline("quiet: true")),
    /pipelines\.cars\.quiet: applies to the whole process; move it to the top level/,
  );
  refused(
    await load(pipeline("status-every: 1")),
    /pipelines\.cars\.status-every: applies to the whole process; move it to the top level/,
  );
  refused(
    await load(pipeline("batch-size: zero")),
    /pipelines\.cars: --batch-size must be an integer >= 1, got 'zero'/,
  );
  refused(await load("pipelines:\n  cars:\n    source: '-'\n"), /pipelines\.cars: run needs --model PATH/);
  refused(
    await load("pipelines:\n  cars:\n"),
    /pipelines\.cars: found nothing, allowed: a mapping of settings/,
  );
  refused(await load("pipelines:\n  'cars 1': {}\n"), /pipelines: 'cars 1' is not a valid pipeline name/);
  refused(await load("pipelines: [cars]\n"), /pipelines: found a list, allowed: a mapping of pipeline names/);
  refused(await load("pipelines: {}\n"), /pipelines: is empty/);
  refused(await load("pipeline:\n  cars: {}\n"), /'pipeline' is not a setting; did you mean 'pipelines'\?/);
});

Deno.test("config: pipelines that would fight over a buffer DIR, an MQTT session or a Kafka group are refused", async () => {
  const two = async (a: string, b: string) => {
    const path = await file(
      ["model: m.onnx", "pipelines:", "  a:", `    ${a}`, "  b:", `    ${b}`].join("\n"),
    );
    return () => checkedPipelines(path, loadConfig(path, RUN_FLAGS).pipelines!);
  };
  refused(
    await two(
      "{source: 'file:/tmp/a.jsonl', buffer: /tmp/edge-buffer}",
      "{source: 'file:/tmp/b.jsonl', buffer: /tmp/../tmp/edge-buffer}",
    ),
    /pipelines\.b\.buffer: buffer \/tmp\/edge-buffer is also pipelines\.a's; give each pipeline its own DIR/,
  );
  refused(
    await two(
      "{source: 'mqtt://127.0.0.1:1883/cars/#?client-id=gw'}",
      "{source: 'mqtt://127.0.0.1:1883/pumps/#?client-id=gw'}",
    ),
    /pipelines\.b\.source: the MQTT session client-id=gw on mqtt:\/\/127\.0\.0\.1:1883 is also pipelines\.a's; give each pipeline its own client-id=/,
  );
  refused(
    await two("{source: 'mqtt://127.0.0.1:1883/cars/#'}", "{source: 'mqtt://127.0.0.1:1883/cars/#'}"),
    /the MQTT session of filter cars\/# \(default client id\) .* is also pipelines\.a's/,
  );
  refused(
    await two("{source: 'kafka://127.0.0.1:9092/cars'}", "{source: 'kafka://127.0.0.1:9092/cars'}"),
    /pipelines\.b\.source: group edgeinfer on topic cars is also pipelines\.a's; give each pipeline its own group=/,
  );
  refused(
    await two("{source: 'file:/tmp/a', sink: 'file:/tmp/o'}", "{source: 'file:/tmp/b', sink: 'file:/tmp/o'}"),
    /pipelines\.b\.sink: file \/tmp\/o is also pipelines\.a's/,
  );
  // The same broker with different sessions, groups or DIRs is fine.
  const fine = await two(
    "{source: 'mqtt://127.0.0.1:1883/cars/#', buffer: /tmp/b1}",
    "{source: 'kafka://127.0.0.1:9092/cars?group=g2', buffer: /tmp/b2}",
  );
  assert.equal(fine().size, 2);
});

Deno.test("config: the shipped examples (scripts/edge*.yaml) are valid", () => {
  const scripts = new URL("../../scripts/", import.meta.url).pathname;
  const examples = [...Deno.readDirSync(scripts)].map((e) => e.name).filter((n) => /^edge.*\.ya?ml$/.test(n));
  assert.ok(examples.includes("edge.pipelines.example.yaml"));
  for (const example of examples) {
    const path = `${scripts}${example}`;
    const config = loadConfig(path, RUN_FLAGS, {});
    if (config.pipelines) assert.ok(checkedPipelines(path, config.pipelines).size >= 2);
    else assert.equal(config.settings.model, "models/car-anomaly.onnx");
  }
});
