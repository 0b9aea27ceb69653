/**
 * The README's secured gateway, end to end: scripts/edge.secure.example.yaml (MQTT over TLS with a password,
 * Kafka over SASL_SSL with SCRAM-SHA-512, a store-and-forward buffer) run as shipped, its ${VAR}s pointed at
 * the listeners of `scripts/services.sh up` (Mosquitto TLS 8883, Kafka SASL_SSL 9094) and its topics
 * renamed to unique ones. Cars publish on the plaintext MQTT listener; predictions and dead letters are read
 * on the plaintext Kafka listener. Skipped, saying why, without the services' TLS files and credentials.
 *
 *   .tools/node_modules/.bin/deno test -A tests/integration/secure_config_test.ts
 */
import assert from "node:assert/strict";
import { runCli, spawnCli } from "../cli/run_cli.ts";
import { consume, KAFKA_BROKERS, MQTT_HOSTPORT, publishMqtt, SERVICES_STATE, uniqueName } from "./brokers.ts";

const EXAMPLE = new URL("../../scripts/edge.secure.example.yaml", import.meta.url).pathname;
const MQTT_TLS_PORT = Number(Deno.env.get("EDGEINFER_MQTT_TLS_PORT") ?? 8883);
const KAFKA_SASL_SSL = `127.0.0.1:${Number(KAFKA_BROKERS[0].split(":").at(-1)) + 2}`;

function credentials(): Record<string, string> | undefined {
  try {
    Deno.statSync(`${SERVICES_STATE}/tls/ca.pem`);
    const text = Deno.readTextFileSync(`${SERVICES_STATE}/credentials.env`);
    const values = Object.fromEntries(
      [...text.matchAll(/^([A-Z_]+)=(.*)$/gm)].map((m) => [m[1], m[2]]),
    );
    const needed = ["MQTT_USER", "MQTT_PASSWORD", "KAFKA_USER", "KAFKA_PASSWORD"];
    return needed.every((k) => values[k]) ? values : undefined;
  } catch {
    return undefined;
  }
}

const secrets = credentials();
if (!secrets) {
  console.warn(
    `secure_config_test: SKIPPED — no ${SERVICES_STATE}/tls/ca.pem or MQTT_/KAFKA_ credentials in ` +
      `${SERVICES_STATE}/credentials.env: run scripts/services.sh up`,
  );
}

Deno.test({
  name:
    "scripts/edge.secure.example.yaml: TLS MQTT → scored → SASL_SSL Kafka through the buffer, no secret shown",
  ignore: !secrets,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "edgeinfer-secure-" });
    const base = uniqueName("secure-cars");
    const predictions = uniqueName("secure-predictions");
    const deadLetters = uniqueName("secure-dead-letters");
    const config = `${dir}/edge.yaml`;
    await Deno.writeTextFile(
      config,
      (await Deno.readTextFile(EXAMPLE))
        .replace("cars/+/sensors", `${base}/+/sensors`)
        .replace("/car-predictions?", `/${predictions}?`)
        .replace("/car-dead-letters?", `/${deadLetters}?`),
    );
    await Deno.writeTextFile(`${dir}/mqtt-password`, `${secrets!.MQTT_PASSWORD}\n`, { mode: 0o600 });
    await Deno.writeTextFile(`${dir}/kafka-password`, `${secrets!.KAFKA_PASSWORD}\n`, { mode: 0o600 });
    const env = {
      MQTT_BROKER: `127.0.0.1:${MQTT_TLS_PORT}`,
      KAFKA_BROKERS: KAFKA_SASL_SSL,
      EDGEINFER_CA: `${SERVICES_STATE}/tls/ca.pem`,
      MQTT_USER: secrets!.MQTT_USER,
      MQTT_PASSWORD_FILE: `${dir}/mqtt-password`,
      KAFKA_USER: secrets!.KAFKA_USER,
      KAFKA_PASSWORD_FILE: `${dir}/kafka-password`,
      EDGEINFER_BUFFER_DIR: `${dir}/buffer`,
      HOSTNAME: uniqueName("gateway"),
    };
    const noSecret = (text: string, label: string) => {
      for (const key of ["MQTT_PASSWORD", "KAFKA_PASSWORD"]) {
        assert.ok(!text.includes(secrets![key]), `${label}: ${key} not shown`);
      }
    };
    try {
      const check = await runCli(["config", "check", config], { env });
      assert.equal(check.code, 0, check.stderr);
      assert.match(check.stdout, new RegExp(`source: mqtts://127\\.0\\.0\\.1:${MQTT_TLS_PORT}/${base}/`));
      assert.match(check.stdout, /sink: kafka:\/\/.*sasl=scram-sha-512/);
      noSecret(check.stdout + check.stderr, "config check");

      const cars = 20;
      const run = spawnCli(["run", "--config", config, "--max-events", String(cars + 1)], env);
      try {
        await run.waitForStderr(/subscribed to/, 30_000);
        const sim = await runCli([
          "simulate",
          "--cars",
          "5",
          "--count",
          String(cars),
          "--rate",
          "0",
          "--quiet",
          "--target",
          `mqtt://${MQTT_HOSTPORT}/${base}/{car}/sensors`,
        ]);
        assert.equal(sim.code, 0, sim.stderr);
        await publishMqtt(`${base}/car-broken/sensors`, ["{not json"]);
        assert.equal(await run.exit(), 0, run.stderr());
      } finally {
        if (run.exited === undefined) {
          run.child.kill("SIGKILL");
          await run.exit();
        }
      }
      assert.match(run.stderr(), /mqtts:\/\/.* → buffer .* → kafka:\/\/.*\(TLS, SASL SCRAM-SHA-512 as /);
      noSecret(run.stderr() + run.stdout(), "run");

      const scored = await consume(predictions, cars);
      assert.equal(scored.length, cars, "every car reading scored");
      for (const r of scored) {
        const record = JSON.parse(r.value);
        assert.equal(typeof record.score, "number");
        assert.equal(r.key, record.key, "keyed by the car");
      }
      const dead = await consume(deadLetters, 1);
      assert.equal(dead.length, 1, "the malformed reading dead-lettered");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
