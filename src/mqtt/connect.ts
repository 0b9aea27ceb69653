/** The mqtt:// URL's parameters, read into the MQTT source options. */
import { type Endpoint, MQTT_PASSWORD_ENV, mqttCredentials } from "../config/endpoint.ts";
import { integerIn, oneOf, readQuery } from "../config/query.ts";
import { createPrivateKey, type KeyObject, X509Certificate } from "node:crypto";
import { UsageError } from "../errors.ts";
import type { Source } from "../pipeline/types.ts";
import type { SourceLimits } from "../connectors.ts";
import { createMqttSource, DEFAULT_KEEPALIVE_S, type MqttTlsOptions } from "./source.ts";
import { DEFAULT_TAKEOVER_DELAY_S } from "./takeover.ts";

type MqttEndpoint = Extract<Endpoint, { kind: "mqtt" }>;

export function mqttSource(flag: string, endpoint: MqttEndpoint, limits: SourceLimits): Source {
  const q = readQuery(flag, endpoint.params, [
    "qos",
    "client-id",
    "share",
    "version",
    "username",
    "password-file",
    "keepalive",
    "takeover",
    "ca",
    "cert",
    "key",
  ]);
  const keepaliveSeconds = integerIn(flag, "keepalive", q.get("keepalive"), {
    min: 1,
    max: 65535,
    fallback: DEFAULT_KEEPALIVE_S,
    meaning: "seconds between MQTT pings; a silent link is dropped after 1.5 times this",
  });
  const qos = Number(oneOf(flag, "qos", q.get("qos"), ["0", "1", "2"], "1")) as 0 | 1 | 2;
  const protocolVersion = Number(oneOf(flag, "version", q.get("version"), ["4", "5"], "5")) as 4 | 5;
  const shareGroup = q.get("share");
  if (shareGroup !== undefined && protocolVersion !== 5) {
    throw new UsageError(`${flag} share=${shareGroup} needs MQTT 5: drop version=4`);
  }
  const takeover = q.get("takeover");
  if (takeover !== undefined && shareGroup === undefined) {
    throw new UsageError(`${flag} takeover=${takeover} needs a shared subscription: add share=GROUP`);
  }
  const takeoverDelaySeconds = shareGroup === undefined || takeover === "off" ? undefined : integerIn(
    flag,
    "takeover",
    takeover,
    {
      min: 0,
      max: 3600,
      fallback: DEFAULT_TAKEOVER_DELAY_S,
      meaning:
        "seconds after a member of the share group vanished before another takes over its session, or off",
    },
  );
  // Password: password-file=PATH, else the URL's user:password@, else $EDGEINFER_MQTT_PASSWORD.
  const { username, password, passwordFrom } = mqttCredentials(flag, endpoint, q);
  if (password !== undefined && username === undefined && protocolVersion === 4) {
    const from = passwordFrom === "env" ? MQTT_PASSWORD_ENV : passwordFrom;
    throw new UsageError(
      `${flag} has a password (from ${from}) but no user name, which MQTT 3.1.1 (version=4) ` +
        `does not allow: add username=NAME`,
    );
  }
  const tls = tlsOptions(flag, endpoint.brokerUrl, q);
  return createMqttSource({
    brokerUrl: endpoint.brokerUrl,
    username,
    password,
    tls,
    topicFilter: endpoint.topic,
    qos,
    // A stable default id: the broker keeps a persistent session per client id, so a
    // restarted edgeinfer must come back under the same one to receive what was queued.
    clientId: q.get("client-id") ?? defaultClientId(endpoint.topic, shareGroup),
    shareGroup,
    protocolVersion,
    maxInFlight: Math.min(65535, Math.max(1, limits.maxHeldEvents)),
    maxHeldBytes: limits.maxHeldBytes,
    maxPayloadBytes: limits.maxPayloadBytes,
    keepOversizeBytes: limits.keepOversizeBytes,
    health: limits.health,
    keepaliveSeconds,
    takeoverDelaySeconds,
  });
}

/**
 * mqtts:// parameters: ca=PATH (the CA that signed the broker's certificate; the certificate is always
 * verified), cert=PATH and key=PATH (a client certificate, for brokers that require one). Read now, so an
 * unreadable file stops the run before it starts.
 */
export function tlsOptions(
  flag: string,
  brokerUrl: string,
  q: Map<string, string>,
): MqttTlsOptions | undefined {
  const tls = brokerUrl.startsWith("mqtts://");
  const caPath = q.get("ca");
  const certPath = q.get("cert");
  const keyPath = q.get("key");
  if (!tls) {
    const given = (["ca", "cert", "key"] as const).find((name) => q.get(name) !== undefined);
    if (given) {
      throw new UsageError(`${flag} ${given}= needs TLS: use mqtts://host:port/... (default port 8883)`);
    }
    return undefined;
  }
  if ((certPath === undefined) !== (keyPath === undefined)) {
    throw new UsageError(
      `${flag} ${certPath === undefined ? "key=" : "cert="} needs ${
        certPath === undefined ? "cert=" : "key="
      } too: a client certificate is the pair cert=PATH&key=PATH`,
    );
  }
  const cert = readPem(flag, "cert", certPath);
  const key = readPem(flag, "key", keyPath);
  if (cert !== undefined && key !== undefined) checkClientCertificate(flag, certPath!, cert, keyPath!, key);
  return { ca: readPem(flag, "ca", caPath), caPath, cert, certPath, key };
}

/**
 * A client certificate that cannot work — unparsable, expired, or not the key's pair — is reported now:
 * the TLS stack would only say "unsupported protocol" or the broker would close the connection.
 */
function checkClientCertificate(flag: string, certPath: string, cert: string, keyPath: string, key: string) {
  let x509: X509Certificate;
  let privateKey: KeyObject;
  try {
    x509 = new X509Certificate(cert);
  } catch (err) {
    throw new UsageError(`${flag} cert=${certPath} is not a PEM certificate (${(err as Error).message})`);
  }
  try {
    privateKey = createPrivateKey(key);
  } catch (err) {
    throw new UsageError(
      `${flag} key=${keyPath} is not an unencrypted PEM private key (${(err as Error).message})`,
    );
  }
  if (!x509.checkPrivateKey(privateKey)) {
    throw new UsageError(`${flag} key=${keyPath} is not the private key of cert=${certPath}`);
  }
  const now = Date.now();
  if (now > Date.parse(x509.validTo) || now < Date.parse(x509.validFrom)) {
    throw new UsageError(
      `${flag} cert=${certPath} is valid only from ${x509.validFrom} to ${x509.validTo}: the broker would refuse it`,
    );
  }
}

function readPem(flag: string, name: string, path: string | undefined): string | undefined {
  if (path === undefined) return undefined;
  if (path === "") throw new UsageError(`${flag} ${name}= needs a path to a PEM file`);
  let content: string;
  try {
    content = Deno.readTextFileSync(path);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound ? "no such file" : (err as Error).message;
    throw new UsageError(`${flag} ${name}=${path} cannot be read (${reason})`);
  }
  if (!content.includes("-----BEGIN ")) {
    throw new UsageError(`${flag} ${name}=${path} is not a PEM file (no -----BEGIN line)`);
  }
  return content;
}

function defaultClientId(filter: string, shareGroup: string | undefined): string {
  // FNV-1a of host + filter: short, stable, and different for different subscriptions.
  let hash = 0x811c9dc5;
  for (const ch of `${Deno.hostname()}|${shareGroup ?? ""}|${filter}`) {
    hash = Math.imul(hash ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  }
  return `edgeinfer-${hash.toString(16).padStart(8, "0")}`;
}
