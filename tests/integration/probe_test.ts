/**
 * `edgeinfer probe` against a running `edgeinfer run --http` (an MQTT source on the shared Mosquitto): the
 * systemd unit's start-up gate (`probe --ready --wait`) and a container health check (`probe`).
 */
import assert from "node:assert/strict";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { runCli, spawnCli } from "../cli/run_cli.ts";
import { freePort, MQTT_HOSTPORT, uniqueName } from "./brokers.ts";

Deno.test("probe: ready and alive while a run serves --http (exit 0, the JSON body); no answer is exit 1", async () => {
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  const http = `127.0.0.1:${freePort()}`;
  const run = spawnCli([
    "run",
    "--model",
    model,
    "--source",
    `mqtt://${MQTT_HOSTPORT}/${uniqueName("probe")}/%23?client-id=${uniqueName("probe")}`,
    "--sink",
    "-",
    "--http",
    http,
  ]);
  try {
    const ready = await runCli(["probe", "--ready", "--http", http, "--wait", "30s"]);
    assert.equal(ready.code, 0, `${ready.stderr}\nrun:\n${run.stderr()}`);
    assert.equal(JSON.parse(ready.stdout).ready, true);
    const alive = await runCli(["probe", "--http", http]);
    assert.equal(alive.code, 0, alive.stderr);
    assert.equal(JSON.parse(alive.stdout).status, "ok");
  } finally {
    run.child.kill("SIGTERM");
    assert.equal(await run.exit(), 0, run.stderr());
  }
  const gone = await runCli(["probe", "--http", http]);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, new RegExp(`^edgeinfer: error: http://${http}/healthz: no answer`));
});

Deno.test("probe: a bad --http is a usage error (exit 2) naming the flag", async () => {
  const result = await runCli(["probe", "--http", "9464"]);
  assert.equal(result.code, 2);
  assert.match(result.stderr, /--http must be HOST:PORT, e\.g\. 127\.0\.0\.1:9464, got '9464'/);
});
