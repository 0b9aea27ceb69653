/** kafka:// security parameters (tls=, ca=, cert=, key=, sasl=, username=, password-file=) read into client options. */
import assert from "node:assert/strict";
import { UsageError } from "../../src/errors.ts";
import {
  describeSecurity,
  KAFKA_PASSWORD_ENV,
  kafkaSecurity,
  securityClientOptions,
} from "../../src/kafka/security.ts";

const query = (text: string) => new Map(new URLSearchParams(text));
const env = (password?: string) => (name: string) => name === KAFKA_PASSWORD_ENV ? password : undefined;

function refused(text: string, pattern: RegExp, password?: string) {
  assert.throws(() => kafkaSecurity("--sink", query(text), env(password)), (err: unknown) => {
    assert.ok(err instanceof UsageError, String(err));
    assert.match(err.message, pattern);
    assert.doesNotMatch(err.message, /s3cret/);
    return true;
  });
}

Deno.test("kafkaSecurity: plaintext without parameters, SASL with the password from the environment", () => {
  assert.deepEqual(kafkaSecurity("--sink", query(""), env("s3cret")), { flag: "--sink" });
  const s = kafkaSecurity("--sink", query("sasl=SCRAM-SHA-512&username=edge"), env("s3cret"));
  assert.deepEqual(s.sasl, { mechanism: "SCRAM-SHA-512", username: "edge", password: "s3cret" });
  assert.equal(s.tls, undefined);
  assert.equal(describeSecurity(s), " (SASL SCRAM-SHA-512 as edge)");
  assert.deepEqual(securityClientOptions(s, ["127.0.0.1:9094"]), {
    sasl: { mechanism: "SCRAM-SHA-512", username: "edge", password: "s3cret" },
  });
});

Deno.test("kafkaSecurity: password-file= wins over the environment; its path, never its content, in errors", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/pw`, "from-file\n");
    await Deno.writeTextFile(`${dir}/empty`, "\n");
    const s = kafkaSecurity("--sink", query(`sasl=plain&username=u&password-file=${dir}/pw`), env("s3cret"));
    assert.equal(s.sasl?.password, "from-file");
    assert.equal(s.sasl?.mechanism, "PLAIN");
    refused(`sasl=plain&username=u&password-file=${dir}/empty`, /password-file=.*empty is empty/);
    refused(`sasl=plain&username=u&password-file=${dir}/none`, /password-file=.*none cannot be read/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("kafkaSecurity: each missing or contradictory setting is named with its fix", () => {
  refused(
    "sasl=gssapi&username=u",
    /sasl=gssapi is not supported: use plain, scram-sha-256 or scram-sha-512/,
  );
  refused("sasl=plain", /sasl=plain needs username=NAME/, "s3cret");
  refused(
    "sasl=plain&username=u",
    /needs a password: set EDGEINFER_KAFKA_PASSWORD or add password-file=PATH/,
  );
  refused("username=u", /username= needs sasl=plain\|scram-sha-256\|scram-sha-512/);
  refused("ca=/x.pem", /ca= needs TLS: add tls=true/);
  refused("tls=yes", /tls=yes must be true or false/);
  refused("tls=true&cert=/x.pem", /cert= needs key= too/);
  refused("tls=true&ca=/nowhere.pem", /ca=\/nowhere.pem cannot be read \(no such file\)/);
});

Deno.test("securityClientOptions: TLS always verifies; SNI only for host names", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/ca.pem`, "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n");
    const s = kafkaSecurity("--source", query(`tls=true&ca=${dir}/ca.pem`));
    assert.equal(describeSecurity(s), " (TLS)");
    const byIp = securityClientOptions(s, ["127.0.0.1:9094"]) as {
      tls: { rejectUnauthorized: boolean };
      tlsServerName: boolean;
    };
    assert.equal(byIp.tls.rejectUnauthorized, true);
    assert.equal(byIp.tlsServerName, false);
    const byName = securityClientOptions(s, ["broker.example.com:9094"]) as { tlsServerName: boolean };
    assert.equal(byName.tlsServerName, true);
    assert.deepEqual(kafkaSecurity("--source", query("tls=false")), { flag: "--source" });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
