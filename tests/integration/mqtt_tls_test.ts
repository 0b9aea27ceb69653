/**
 * The MQTT source over TLS against the real Mosquitto of `scripts/services.sh up`: its TLS listener
 * (127.0.0.1:8883, user name + password) and its mutual-TLS listener (127.0.0.1:8884, client certificate
 * + password), with the test CA, certificates and credentials.env that services.sh makes once in
 * $EDGEINFER_STATE (default /tmp/edgeinfer-services). Events are published on the plaintext listener
 * (EDGEINFER_MQTT_URL, 1883); Mosquitto forwards them to edgeinfer's TLS connection. Skipped, saying why,
 * when the TLS files are absent (services started by an older services.sh: run `up` again).
 *
 *   .tools/node_modules/.bin/deno test -A tests/integration/mqtt_tls_test.ts
 */
import assert from "node:assert/strict";
import { linearModelFile } from "../fixtures/linear_model.ts";
import mqtt from "mqtt";
import { runCli, spawnCli } from "../cli/run_cli.ts";
import { MQTT_URL, publishMqtt, SERVICES_STATE, uniqueName } from "./brokers.ts";

const TLS_PORT = Number(Deno.env.get("EDGEINFER_MQTT_TLS_PORT") ?? 8883);
const MTLS_PORT = Number(Deno.env.get("EDGEINFER_MQTT_MTLS_PORT") ?? 8884);
const TLS = `${SERVICES_STATE}/tls`;
/** A refusal must end the run well within this (measured: about 0.4 s). */
const PROMPT_MS = 15_000;

function readCredentials(): { user: string; password: string } | undefined {
  try {
    for (const f of ["ca.pem", "client.pem", "client-key.pem", "other-ca.pem"]) Deno.statSync(`${TLS}/${f}`);
    const text = Deno.readTextFileSync(`${SERVICES_STATE}/credentials.env`);
    const user = /^MQTT_USER=(.*)$/m.exec(text)?.[1];
    const password = /^MQTT_PASSWORD=(.*)$/m.exec(text)?.[1];
    return user && password ? { user, password } : undefined;
  } catch {
    return undefined;
  }
}

const credentials = readCredentials();
if (!credentials) {
  console.warn(
    `mqtt_tls_test: SKIPPED — no ${TLS}/{ca,client,client-key,other-ca}.pem or ${SERVICES_STATE}/credentials.env: ` +
      "run scripts/services.sh up",
  );
}

const model = credentials ? await linearModelFile({ features: ["a"], weights: [1], bias: 0 }) : "";

interface Scored {
  key: string;
  id: number;
  score: number;
}

/** edgeinfer subscribed over TLS to `<base>/#`; the events published on the plaintext listener; all scored. */
async function scoresEverything(port: number, extra: string) {
  const base = uniqueName("edgeinfer-tls");
  const dir = await Deno.makeTempDir({ prefix: "edgeinfer-tls-" });
  const out = `${dir}/predictions.jsonl`;
  const n = 20;
  const run = spawnCli([
    "run",
    "--model",
    model,
    "--source",
    `mqtts://127.0.0.1:${port}/${base}/%23?ca=${TLS}/ca.pem&username=${credentials!.user}` +
    `&client-id=${uniqueName("edgeinfer-tls")}${extra}`,
    "--sink",
    `file:${out}`,
    "--max-events",
    String(n),
  ], { EDGEINFER_MQTT_PASSWORD: credentials!.password });
  try {
    await run.waitForStderr(/subscribed to/, 30_000);
    const events = Array.from({ length: n }, (_, i) => JSON.stringify({ id: i, a: i }));
    await publishMqtt(`${base}/car`, events);
    assert.equal(await run.exit(), 0, run.stderr());
  } finally {
    if (run.exited === undefined) {
      run.child.kill("SIGKILL");
      await run.exit();
    }
  }
  const lines = Deno.readTextFileSync(out).trim().split("\n");
  const scored = lines.map((l) => JSON.parse(l) as Scored);
  assert.deepEqual(scored.map((s) => s.id).sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i));
  for (const s of scored) {
    assert.equal(s.score, s.id, `event ${s.id}: score = a`);
    assert.equal(s.key, `${base}/car`);
  }
  assert.ok(!run.stderr().includes(credentials!.password), "no password in the output");
  await Deno.remove(dir, { recursive: true });
}

/** A run that must end at once with exit `code` and exactly one error line matching `reason`. */
async function refused(
  label: string,
  port: number,
  query: string,
  reason: RegExp,
  password = credentials!.password,
  code = 1,
) {
  const t0 = performance.now();
  const run = spawnCli([
    "run",
    "--model",
    model,
    "--source",
    `mqtts://127.0.0.1:${port}/${uniqueName("edgeinfer-tls")}/%23?username=${credentials!.user}` +
    `&client-id=${uniqueName("edgeinfer-tls")}&${query}`,
    "--sink",
    "-",
  ], { EDGEINFER_MQTT_PASSWORD: password });
  const timer = setTimeout(() => run.child.kill("SIGKILL"), PROMPT_MS);
  const exit = await run.exit();
  clearTimeout(timer);
  const ms = Math.round(performance.now() - t0);
  const stderr = run.stderr();
  assert.equal(exit, code, `${label}: exit ${exit} after ${ms} ms; stderr:\n${stderr}`);
  assert.ok(ms < PROMPT_MS, `${label}: took ${ms} ms`);
  const errors = stderr.split("\n").filter((l) => /error|cannot|is not/.test(l));
  assert.equal(errors.length, 1, `${label}: one error line; stderr:\n${stderr}`);
  assert.match(errors[0], reason, label);
  assert.doesNotMatch(stderr, /retrying|still waiting/, `${label}: not treated as transient`);
  for (const secret of [credentials!.password, password]) {
    assert.ok(
      !stderr.includes(secret) && !run.stdout().includes(secret),
      `${label}: no password in the output`,
    );
  }
  console.log(`${label}: exit ${exit} after ${ms} ms: ${errors[0]}`);
}

const ignore = !credentials;

Deno.test({
  name: `MQTT over TLS (127.0.0.1:${TLS_PORT}, ca= + password) → file sink: every event scored`,
  ignore,
  fn: () => scoresEverything(TLS_PORT, ""),
});

Deno.test({
  name: `MQTT over mutual TLS (127.0.0.1:${MTLS_PORT}, ca= + cert= + key= + password): every event scored`,
  ignore,
  fn: () => scoresEverything(MTLS_PORT, `&cert=${TLS}/client.pem&key=${TLS}/client-key.pem`),
});

Deno.test({
  name: "MQTT over TLS: a broker certificate from another CA ends the run at once, naming the CA",
  ignore,
  fn: () =>
    refused(
      "wrong CA",
      TLS_PORT,
      `ca=${TLS}/other-ca.pem`,
      /error: MQTT broker mqtts:\/\/127\.0\.0\.1:\d+: TLS: the broker's certificate is not signed by --source ca=.*other-ca\.pem$/,
    ),
});

Deno.test({
  name: "MQTT over TLS: a wrong password ends the run at once (CONNACK refused), the password never shown",
  ignore,
  fn: () =>
    refused(
      "wrong password",
      TLS_PORT,
      `ca=${TLS}/ca.pem`,
      /error: MQTT broker mqtts:\/\/127\.0\.0\.1:\d+ refused the connection: Connection refused: Not authorized/,
      `wrong-${crypto.randomUUID()}`,
    ),
});

Deno.test({
  name: "MQTT over mutual TLS: no client certificate ends the run at once, saying the broker requires one",
  ignore,
  fn: () =>
    refused(
      "missing client certificate",
      MTLS_PORT,
      `ca=${TLS}/ca.pem`,
      /error: MQTT broker mqtts:\/\/127\.0\.0\.1:\d+: TLS: the broker requires a client certificate/,
    ),
});

Deno.test({
  name: "MQTT over TLS: an unreadable ca=, or a key= that is not cert='s pair, is a usage error (exit 2)",
  ignore,
  async fn() {
    await refused(
      "unreadable ca=",
      TLS_PORT,
      `ca=${TLS}/absent.pem`,
      /ca=.*absent\.pem cannot be read/,
      undefined,
      2,
    );
    await refused(
      "mismatched key=",
      MTLS_PORT,
      `ca=${TLS}/ca.pem&cert=${TLS}/client.pem&key=${TLS}/other-ca-key.pem`,
      /key=.*other-ca-key\.pem is not the private key of cert=/,
      undefined,
      2,
    );
  },
});

Deno.test({
  name:
    "simulate publishes over TLS with a password (8883) and over mTLS (8884); a wrong CA ends it with one line",
  ignore,
  async fn() {
    const base = uniqueName("edgeinfer-sim-tls");
    // A subscriber on the plaintext listener counts what simulate published through the TLS ones.
    const received: string[] = [];
    const subscriber = await mqtt.connectAsync(MQTT_URL, {
      clientId: uniqueName("sim-tls-sub"),
      clean: true,
    });
    subscriber.on("message", (topic) => received.push(topic));
    await subscriber.subscribeAsync(`${base}/#`, { qos: 1 });
    const env = { EDGEINFER_MQTT_PASSWORD: credentials!.password };
    const target = (port: number, path: string, extra = "") =>
      `mqtts://127.0.0.1:${port}/${base}/${path}/{car}?ca=${TLS}/ca.pem&username=${
        credentials!.user
      }${extra}`;
    try {
      for (
        const [port, path, extra] of [
          [TLS_PORT, "tls", ""],
          [MTLS_PORT, "mtls", `&cert=${TLS}/client.pem&key=${TLS}/client-key.pem`],
        ] as const
      ) {
        const result = await runCli(
          [
            "simulate",
            "--cars",
            "5",
            "--count",
            "50",
            "--rate",
            "0",
            "--quiet",
            "--target",
            target(port, path, extra),
          ],
          { env },
        );
        assert.equal(result.code, 0, result.stderr);
      }
      const deadline = Date.now() + 10_000;
      const count = (path: string) => received.filter((t) => t.startsWith(`${base}/${path}/`)).length;
      while ((count("tls") < 50 || count("mtls") < 50) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(count("tls"), 50, "every event published over TLS");
      assert.equal(count("mtls"), 50, "every event published over mTLS");
    } finally {
      await subscriber.endAsync();
    }
    const wrongCa = await runCli(
      [
        "simulate",
        "--count",
        "5",
        "--rate",
        "0",
        "--target",
        target(TLS_PORT, "x").replace("ca.pem", "other-ca.pem"),
      ],
      { env },
    );
    assert.equal(wrongCa.code, 1, wrongCa.stderr);
    assert.match(
      wrongCa.stderr,
      /TLS: the broker's certificate is not signed by --target ca=.*other-ca\.pem/,
    );
    assert.doesNotMatch(wrongCa.stderr + wrongCa.stdout, new RegExp(credentials!.password));
  },
});
