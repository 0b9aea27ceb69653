/**
 * Kafka over TLS, SASL and mutual TLS against the real broker of `scripts/services.sh up`: its SASL_SSL
 * listener (Kafka port + 2, 9094: SCRAM-SHA-512, SCRAM-SHA-256 and PLAIN) and its SSL listener that
 * requires a client certificate (Kafka port + 3, 9095), with authorization on: KAFKA_USER (and the test
 * client certificate's principal) may do everything, KAFKA_DENIED_USER may write no topic. The CA,
 * certificates and credentials.env are the ones services.sh makes once in $EDGEINFER_STATE. Topics are
 * created and read on the plaintext listener. Skipped, saying why, when those files are absent (services
 * started by an older services.sh: run `up` again).
 *
 *   .tools/node_modules/.bin/deno test -A tests/integration/kafka_security_test.ts
 */
import assert from "node:assert/strict";
import { linearModelFile } from "../fixtures/linear_model.ts";
import { assertSeedScore, runCli, seedFixture, spawnCli } from "../cli/run_cli.ts";
import { consume, createTopic, KAFKA_BROKERS, produce, SERVICES_STATE, uniqueName } from "./brokers.ts";

const KAFKA_PORT = Number(KAFKA_BROKERS[0].split(":").at(-1));
const SASL_SSL = `127.0.0.1:${KAFKA_PORT + 2}`;
const MTLS = `127.0.0.1:${KAFKA_PORT + 3}`;
const TLS = `${SERVICES_STATE}/tls`;
/** A refusal must end the run well within this (measured: under 1 s). */
const PROMPT_MS = 15_000;

interface Credentials {
  user: string;
  password: string;
  deniedUser: string;
  deniedPassword: string;
}

function readCredentials(): Credentials | undefined {
  try {
    for (const f of ["ca.pem", "client.pem", "client-key.pem", "other-ca.pem"]) Deno.statSync(`${TLS}/${f}`);
    const text = Deno.readTextFileSync(`${SERVICES_STATE}/credentials.env`);
    const get = (name: string) => new RegExp(`^${name}=(.*)$`, "m").exec(text)?.[1];
    const [user, password, deniedUser, deniedPassword] = [
      "KAFKA_USER",
      "KAFKA_PASSWORD",
      "KAFKA_DENIED_USER",
      "KAFKA_DENIED_PASSWORD",
    ]
      .map(get);
    return user && password && deniedUser && deniedPassword
      ? { user, password, deniedUser, deniedPassword }
      : undefined;
  } catch {
    return undefined;
  }
}

const credentials = readCredentials();
if (!credentials) {
  console.warn(
    `kafka_security_test: SKIPPED — no ${TLS}/{ca,client,client-key,other-ca}.pem or KAFKA_* in ` +
      `${SERVICES_STATE}/credentials.env: run scripts/services.sh up`,
  );
}
const ignore = !credentials;
const seed = seedFixture();
if (!seed) console.warn("kafka_security_test: SKIPPING the seed test: ../shared/seed-ksql-udf is absent");

const CA = `ca=${TLS}/ca.pem`;
const CLIENT_CERT = `cert=${TLS}/client.pem&key=${TLS}/client-key.pem`;
const sasl = (mechanism: string, user = credentials!.user) =>
  `tls=true&${CA}&sasl=${mechanism}&username=${user}`;

/** Kafka URL on a secured listener. */
const url = (listener: string, topic: string, query: string) => `kafka://${listener}/${topic}?${query}`;

/** Nothing secret in what a run printed. */
function assertNoSecret(text: string, label: string) {
  for (const secret of [credentials!.password, credentials!.deniedPassword]) {
    assert.ok(!text.includes(secret), `${label}: no password in the output`);
  }
}

/**
 * `n` events {id, a} produced on the plaintext listener, scored by edgeinfer from `source` to `sink`
 * (secured URLs), read back on the plaintext listener: every event scored once, score = a.
 */
async function scoresEverything(
  label: string,
  source: (topic: string) => string,
  sink: (topic: string) => string,
  extra: string[] = [],
) {
  const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
  const input = uniqueName("secure-in");
  const out = uniqueName("secure-out");
  const n = 40;
  await createTopic(input, 2);
  await produce(
    input,
    Array.from({ length: n }, (_, i) => ({ key: `car-${i % 4}`, value: JSON.stringify({ id: i, a: i }) })),
  );
  const run = spawnCli(
    [
      "run",
      "--model",
      model,
      "--source",
      source(input),
      "--sink",
      sink(out),
      "--max-events",
      String(n),
      ...extra,
    ],
    { EDGEINFER_KAFKA_PASSWORD: credentials!.password },
  );
  assert.equal(await run.exit(), 0, `${label}: ${run.stderr()}`);
  const records = await consume(out, n);
  const scored = records.map((r) => JSON.parse(r.value) as { id: number; score: number });
  assert.deepEqual(
    scored.map((s) => s.id).sort((a, b) => a - b),
    Array.from({ length: n }, (_, i) => i),
    label,
  );
  for (const s of scored) assert.equal(s.score, s.id, `${label}: event ${s.id}: score = a`);
  assertNoSecret(run.stderr() + run.stdout(), label);
  return run.stderr();
}

/** A run that must end at once with exit 1 and one error line matching `reason`, no password shown. */
async function refused(label: string, args: string[], reason: RegExp, password = credentials!.password) {
  const t0 = performance.now();
  const run = spawnCli(["run", ...args], { EDGEINFER_KAFKA_PASSWORD: password });
  const timer = setTimeout(() => run.child.kill("SIGKILL"), PROMPT_MS);
  const exit = await run.exit();
  clearTimeout(timer);
  const ms = Math.round(performance.now() - t0);
  const stderr = run.stderr();
  assert.equal(exit, 1, `${label}: exit ${exit} after ${ms} ms; stderr:\n${stderr}`);
  const errors = stderr.split("\n").filter((l) => /^edgeinfer: error:/.test(l));
  assert.equal(errors.length, 1, `${label}: one error line; stderr:\n${stderr}`);
  assert.match(errors[0], reason, label);
  assertNoSecret(stderr + run.stdout(), label);
  assert.ok(!(stderr + run.stdout()).includes(password), `${label}: the password given not shown`);
  console.log(`${label}: exit 1 after ${ms} ms: ${errors[0]}`);
}

Deno.test({
  name:
    "Kafka over SASL_SSL: source as SCRAM-SHA-512, sink as PLAIN (password from the environment): every event scored",
  ignore,
  async fn() {
    const stderr = await scoresEverything(
      "SASL_SSL",
      (t) => url(SASL_SSL, t, `${sasl("scram-sha-512")}&group=${uniqueName("secure")}`),
      (t) => url(SASL_SSL, t, sasl("plain")),
    );
    assert.match(
      stderr,
      /\(TLS, SASL SCRAM-SHA-512 as [^)]+\) → kafka:\/\/[^ ]+ \(TLS, SASL PLAIN as [^)]+\)/,
    );
  },
});

Deno.test({
  name: "Kafka over mutual TLS (client certificate, no password): every event scored",
  ignore,
  async fn() {
    const stderr = await scoresEverything(
      "mTLS",
      (t) => url(MTLS, t, `tls=true&${CA}&${CLIENT_CERT}&group=${uniqueName("secure")}`),
      (t) => url(MTLS, t, `tls=true&${CA}&${CLIENT_CERT}`),
    );
    assert.match(stderr, /\(mTLS\) → kafka:\/\/[^ ]+ \(mTLS\)/);
  },
});

Deno.test({
  name:
    "Kafka over SASL_SSL, exactly once (SCRAM-SHA-256, password from password-file=): every event scored once",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    const file = `${dir}/kafka-password`;
    await Deno.writeTextFile(file, `${credentials!.password}\n`, { mode: 0o600 });
    try {
      const query = `${sasl("scram-sha-256")}&password-file=${file}`;
      const stderr = await scoresEverything(
        "exactly once over SASL_SSL",
        (t) => url(SASL_SSL, t, `${query}&group=${uniqueName("secure")}`),
        (t) => url(SASL_SSL, t, `${query}&transactional-id=${uniqueName("secure-tx")}`),
        ["--exactly-once"],
      );
      assert.match(stderr, /exactly once/);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "Kafka over SASL_SSL: the 23 seed messages give the UDF's scores",
  ignore: ignore || !seed,
  async fn() {
    const { lines, expected } = seed!;
    const input = uniqueName("ecg-secure-in");
    const out = uniqueName("ecg-secure-out");
    await createTopic(input, 1);
    await produce(input, lines.map((line) => ({ key: line.split(",")[0], value: line })));
    const run = spawnCli([
      "run",
      "--model",
      seed!.model,
      "--format",
      "delimited",
      "--source",
      url(SASL_SSL, input, `${sasl("scram-sha-512")}&group=${uniqueName("secure")}`),
      "--sink",
      url(SASL_SSL, out, sasl("scram-sha-512")),
      "--max-events",
      String(lines.length),
    ], { EDGEINFER_KAFKA_PASSWORD: credentials!.password });
    assert.equal(await run.exit(), 0, run.stderr());
    const records = await consume(out, lines.length);
    assert.equal(records.length, 23);
    for (const r of records) {
      const record = JSON.parse(r.value);
      assertSeedScore(record.score, expected.get(record.id)!, `event ${record.id}`);
    }
  },
});

Deno.test({
  name: "Kafka security refusals end the run at once, each with its own line: wrong CA, wrong password, " +
    "missing client certificate, a user without Write",
  ignore,
  async fn() {
    const model = await linearModelFile({ features: ["a"], weights: [1], bias: 0 });
    const topic = uniqueName("secure-refused");
    await createTopic(topic, 1);
    await produce(topic, [{ key: "k", value: JSON.stringify({ id: 1, a: 1 }) }]);
    const dir = await Deno.makeTempDir();
    const events = `${dir}/events.jsonl`;
    await Deno.writeTextFile(events, `${JSON.stringify({ id: 1, a: 1 })}\n`);
    const toSink = (sink: string) => ["--model", model, "--source", `file:${events}`, "--sink", sink];
    try {
      await refused(
        "wrong CA",
        toSink(url(SASL_SSL, topic, sasl("scram-sha-512").replace("ca.pem", "other-ca.pem"))),
        /TLS: the broker's certificate is not signed by --sink ca=.*other-ca\.pem$/,
      );
      await refused(
        "wrong password (source)",
        [
          "--model",
          model,
          "--source",
          url(SASL_SSL, topic, `${sasl("scram-sha-512")}&group=${uniqueName("g")}`),
        ],
        /Kafka source: .*SASL SCRAM-SHA-512 login as \S+ refused \(.*invalid credentials.*\): check --source username= and the password/,
        `wrong-${crypto.randomUUID()}`,
      );
      await refused(
        "missing client certificate",
        toSink(url(MTLS, topic, `tls=true&${CA}`)),
        /TLS: the broker requires a client certificate: add --sink cert=PATH&key=PATH/,
      );
      await refused(
        "denied user",
        toSink(url(SASL_SSL, topic, sasl("scram-sha-512", credentials!.deniedUser))),
        new RegExp(
          `User:${
            credentials!.deniedUser
          } may not use the topic .*topic "${topic}" \\(TOPIC_AUTHORIZATION_FAILED\\)`,
        ),
        credentials!.deniedPassword,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "simulate --target kafka:// over SASL_SSL: the fleet arrives; a user without Write is refused with one line",
  ignore,
  async fn() {
    const topic = uniqueName("secure-sim");
    const env = { EDGEINFER_KAFKA_PASSWORD: credentials!.password };
    const ok = await runCli(
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
        url(SASL_SSL, topic, sasl("scram-sha-512")),
      ],
      { env },
    );
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal((await consume(topic, 50)).length, 50);
    const denied = await runCli(
      [
        "simulate",
        "--count",
        "5",
        "--rate",
        "0",
        "--target",
        url(SASL_SSL, topic, sasl("plain", credentials!.deniedUser)),
      ],
      { env: { EDGEINFER_KAFKA_PASSWORD: credentials!.deniedPassword } },
    );
    assert.equal(denied.code, 1, denied.stderr);
    assert.match(denied.stderr, /TOPIC_AUTHORIZATION_FAILED/);
    assertNoSecret(ok.stderr + ok.stdout + denied.stderr + denied.stdout, "simulate");
  },
});
