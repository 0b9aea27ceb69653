/**
 * Models delivered over Kafka (--model-source, --model-cache, `edgeinfer model publish`), on the real broker:
 * a running Kafka → Kafka pipeline swaps to a newly published model without a restart or a lost event; a
 * tampered publish (checksum mismatch) is ignored; a restart without the broker scores with the cached model.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { runCli, spawnCli } from "../cli/run_cli.ts";
import { linearModel, linearModelFile } from "../fixtures/linear_model.ts";
import { chunkModel, MODEL_HEADER } from "../../src/model/wire.ts";
import { createTopic, kafka, KAFKA_BROKERS, LiveOutput, produce, SteadyFeed, uniqueName } from "./brokers.ts";
import { assertEachScoredOnce, assertOneSwitch, PARTITIONS, readScored, waitFor } from "./scored.ts";

const KAFKA = KAFKA_BROKERS.join(",");

Deno.test("model over Kafka: publish → the running pipeline swaps; a tampered publish is ignored; a restart without the broker uses the cache", async () => {
  const models = uniqueName("edgeinfer-models");
  const input = uniqueName("mk-in");
  const output = uniqueName("mk-out");
  await createTopic(input, PARTITIONS);
  await createTopic(output, PARTITIONS);
  const v1 = await linearModelFile({ features: ["a"], weights: [1], bias: 0, name: "fleet", version: "1" });
  const v2 = await linearModelFile({
    features: ["a"],
    weights: [1],
    bias: 1000,
    name: "fleet",
    version: "2",
  });
  const cache = await Deno.makeTempDir();
  // 100-byte chunks: the ~330-byte models take 4 records each.
  const to = `kafka://${KAFKA}/${models}?chunk-bytes=100`;

  const published = await runCli(["model", "publish", v1, "--to", to]);
  assert.equal(published.code, 0, published.stderr);
  assert.match(
    published.stdout,
    /^published model fleet v1 \(\d+ bytes, sha256 [0-9a-f]{64}\) to .* in 4 chunks\n$/,
  );
  // Created compacted.
  const admin = kafka.admin();
  await admin.connect();
  const configs = await admin.describeConfigs({
    resources: [{ type: 2, name: models, configNames: ["cleanup.policy"] }],
    includeSynonyms: false,
  });
  await admin.disconnect();
  assert.equal(configs.resources[0].configEntries[0].configValue, "compact");

  // A publish cut short (2 of its 4 chunks): listed when the reader reaches the end, never used.
  const cut = chunkModel(
    linearModel({ features: ["a"], weights: [2], bias: 0, name: "fleet", version: "9" }),
    {
      name: "fleet",
      version: "9",
      chunkBytes: 100,
      published: Date.now(),
    },
  );
  await produce(
    models,
    cut.slice(0, 2).map((c) => ({
      key: c.key,
      value: Buffer.from(c.value),
      headers: { [MODEL_HEADER]: c.header },
    })) as never,
  );

  const feed = new SteadyFeed(input, { rate: 600, tickMs: 20, partitions: PARTITIONS });
  const run = spawnCli([
    "run",
    "--model-source",
    `kafka://${KAFKA}/${models}`,
    "--model-cache",
    cache,
    "--source",
    `kafka://${KAFKA}/${input}?group=${uniqueName("mk")}`,
    "--sink",
    `kafka://${KAFKA}/${output}`,
    "--batch-size",
    "32",
    "--status-every",
    "1",
  ]);
  const live = await LiveOutput.start(output, readScored);
  try {
    await run.waitForStderr(/model fleet v1 from kafka:\/\/.* \(sha256 [0-9a-f]{12}…\)/);
    assert.match(
      run.stderr(),
      /model source: model fleet v9 \(sha256 [0-9a-f]{12}…\): 2 of 4 chunks, ignored until complete/,
    );
    await waitFor("predictions of v1", () => live.count > 300, run);

    // A tampered v3: one byte of one chunk changed after the checksum was taken.
    const v3 = linearModel({ features: ["a"], weights: [1], bias: 3000, name: "fleet", version: "3" });
    const chunks = chunkModel(v3, { name: "fleet", version: "3", chunkBytes: 100, published: Date.now() });
    const tampered = chunks[1].value.slice();
    tampered[20] ^= 0xff;
    await produce(
      models,
      chunks.map((c, i) => ({
        key: c.key,
        value: Buffer.from(i === 1 ? tampered : c.value),
        headers: { [MODEL_HEADER]: c.header },
      })) as never,
    );
    await run.waitForStderr(
      /model source: model fleet v3 \(sha256 [0-9a-f]{12}…\): checksum mismatch .*; ignored\n/,
    );
    const seen = live.count;
    await waitFor("more predictions after the tampered publish", () => live.count > seen + 300, run);
    assert.ok(live.records.every((r) => r.version === "1"), "still scored by v1");

    const second = await runCli(["model", "publish", v2, "--to", to]);
    assert.equal(second.code, 0, second.stderr);
    await run.waitForStderr(/model swapped: fleet v1 → fleet v2 .*from kafka:\/\//);
    await waitFor("predictions of v2", () => live.records.filter((r) => r.version === "2").length > 300, run);
    await feed.stop();
    await waitFor("every event scored", () => live.covered() >= feed.count, run);
    run.child.kill("SIGTERM");
    assert.equal(await run.exit(), 0, run.stderr());
    assertEachScoredOnce(live, feed.count, { "1": 0, "2": 1000 });
    assertOneSwitch(live.records, "1", "2");
  } finally {
    if (run.exited === undefined) run.child.kill("SIGKILL");
    await run.exit();
    await feed.stop().catch(() => {});
    await live.stop();
  }

  // The last good model is in the cache: a start with the broker unreachable scores with it.
  const cached = JSON.parse(await Deno.readTextFile(`${cache}/model.json`));
  assert.equal(cached.version, "2");
  const offline = await runCli([
    "run",
    "--model-source",
    `kafka://127.0.0.1:1/${models}`,
    "--model-cache",
    cache,
    "--source",
    "-",
  ], { stdin: '{"id":1,"a":5}\n' });
  assert.equal(offline.code, 0, offline.stderr);
  assert.match(
    offline.stderr,
    /kafka:\/\/127\.0\.0\.1:1\/.* cannot be read \(.*\): starting with the cached model fleet v2 from /,
  );
  const record = JSON.parse(offline.stdout);
  assert.deepEqual([record.score, record.model], [1005, { name: "fleet", version: "2" }]);

  // Without a cache and without --model, there is nothing to start with: one line naming the fix.
  const nothing = await runCli(["run", "--model-source", `kafka://127.0.0.1:1/${models}`, "--source", "-"], {
    stdin: "",
  });
  assert.equal(nothing.code, 2, nothing.stderr);
  assert.match(
    nothing.stderr,
    /cannot be read \(.*\) and no --model-cache: give --model PATH as the first model/,
  );
  await Deno.remove(cache, { recursive: true });
});

const STATE = Deno.env.get("EDGEINFER_STATE") ?? "/tmp/edgeinfer-services";
function saslCredentials(): { user: string; password: string } | undefined {
  try {
    const text = Deno.readTextFileSync(`${STATE}/credentials.env`);
    Deno.statSync(`${STATE}/tls/ca.pem`);
    const get = (name: string) => new RegExp(`^${name}=(.*)$`, "m").exec(text)?.[1];
    const [user, password] = [get("KAFKA_USER"), get("KAFKA_PASSWORD")];
    return user && password ? { user, password } : undefined;
  } catch {
    return undefined;
  }
}
const sasl = saslCredentials();
if (!sasl) {
  console.warn(`model_kafka_test: SKIPPING the SASL_SSL test: no ${STATE}/credentials.env (services.sh up)`);
}

Deno.test({
  name:
    "model over Kafka: publish and read over SASL_SSL (SCRAM-SHA-512); a wrong password ends the start with one line",
  ignore: !sasl,
  async fn() {
    const listener = `${KAFKA_BROKERS[0].replace(/:\d+$/, "")}:${
      Number(KAFKA_BROKERS[0].split(":").pop()) + 2
    }`;
    const query = `tls=true&ca=${STATE}/tls/ca.pem&sasl=scram-sha-512&username=${sasl!.user}`;
    const topic = uniqueName("edgeinfer-models-secure");
    const model = await linearModelFile({
      features: ["a"],
      weights: [1],
      bias: 7,
      name: "secure",
      version: "5",
    });
    const env = { EDGEINFER_KAFKA_PASSWORD: sasl!.password };
    const published = await runCli(
      ["model", "publish", model, "--to", `kafka://${listener}/${topic}?${query}&chunk-bytes=100`],
      { env },
    );
    assert.equal(published.code, 0, published.stderr);
    const run = await runCli([
      "run",
      "--model-source",
      `kafka://${listener}/${topic}?${query}`,
      "--source",
      "-",
    ], {
      env,
      stdin: '{"id":1,"a":5}\n',
    });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /model secure v5 from kafka:\/\/.* \(TLS, SASL SCRAM-SHA-512 as .*\)/);
    assert.deepEqual(JSON.parse(run.stdout).model, { name: "secure", version: "5" });
    assert.equal(JSON.parse(run.stdout).score, 12);
    const refused = await runCli([
      "run",
      "--model-source",
      `kafka://${listener}/${topic}?${query}`,
      "--source",
      "-",
    ], {
      env: { EDGEINFER_KAFKA_PASSWORD: "wrong" },
      stdin: "",
    });
    assert.equal(refused.code, 1, refused.stderr);
    assert.match(
      refused.stderr,
      /^edgeinfer: error: --model-source .* login as .* refused .*check --model-source username= and the password/,
    );
    assert.equal(refused.stderr.trim().split("\n").length, 1, refused.stderr);
    for (const out of [published.stdout + published.stderr, run.stderr, refused.stderr]) {
      assert.ok(!out.includes(sasl!.password), "no password in the output");
    }
  },
});
