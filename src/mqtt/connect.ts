/** The mqtt:// URL's parameters, read into the MQTT source options. */
import { type Endpoint, MQTT_PASSWORD_ENV, mqttCredentials } from "../config/endpoint.ts";
import { integerIn, oneOf, readQuery } from "../config/query.ts";
import { readTlsFiles, type TlsFiles, tlsParamGiven } from "../config/tls.ts";
import { UsageError } from "../errors.ts";
import type { Sink, Source } from "../pipeline/types.ts";
import type { SourceLimits } from "../connectors.ts";
import type { Health } from "../pipeline/health.ts";
import type { Logger } from "../log.ts";
import { createMqttSource, DEFAULT_KEEPALIVE_S } from "./source.ts";
import { createMqttSink } from "./sink.ts";
import { publisherClientId } from "./publisher.ts";
import { TopicTemplate } from "./topic_template.ts";
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
    logger: limits.logger,
    keepaliveSeconds,
    takeoverDelaySeconds,
  });
}

/** A --sink or --dlq mqtt:// URL: the MQTT sink (QoS 1, durable once the broker PUBACKs). */
export function mqttSink(
  flag: string,
  endpoint: MqttEndpoint,
  options: { health?: Health; logger?: Logger },
): Sink {
  const q = readQuery(flag, endpoint.params, [
    "client-id",
    "version",
    "username",
    "password-file",
    "keepalive",
    "ca",
    "cert",
    "key",
  ]);
  const protocolVersion = Number(oneOf(flag, "version", q.get("version"), ["4", "5"], "5")) as 4 | 5;
  const { username, password, passwordFrom } = mqttCredentials(flag, endpoint, q);
  if (password !== undefined && username === undefined && protocolVersion === 4) {
    const from = passwordFrom === "env" ? MQTT_PASSWORD_ENV : passwordFrom;
    throw new UsageError(
      `${flag} has a password (from ${from}) but no user name, which MQTT 3.1.1 (version=4) ` +
        `does not allow: add username=NAME`,
    );
  }
  return createMqttSink({
    flag,
    brokerUrl: endpoint.brokerUrl,
    topic: new TopicTemplate(endpoint.topic, flag),
    username,
    password,
    tls: tlsOptions(flag, endpoint.brokerUrl, q),
    clientId: q.get("client-id") || publisherClientId(flag === "--dlq" ? "dlq" : "sink"),
    protocolVersion,
    keepaliveSeconds: integerIn(flag, "keepalive", q.get("keepalive"), {
      min: 1,
      max: 65535,
      fallback: DEFAULT_KEEPALIVE_S,
      meaning: "seconds between MQTT pings; a silent link is dropped after 1.5 times this",
    }),
    health: options.health,
    logger: options.logger,
  });
}

/** mqtts:// parameters ca=, cert=, key= (src/config/tls.ts); refused on plain mqtt://. */
export function tlsOptions(flag: string, brokerUrl: string, q: Map<string, string>): TlsFiles | undefined {
  if (brokerUrl.startsWith("mqtts://")) return readTlsFiles(flag, q);
  const given = tlsParamGiven(q);
  if (given) {
    throw new UsageError(`${flag} ${given}= needs TLS: use mqtts://host:port/... (default port 8883)`);
  }
  return undefined;
}

function defaultClientId(filter: string, shareGroup: string | undefined): string {
  // FNV-1a of host + filter: short, stable, and different for different subscriptions.
  let hash = 0x811c9dc5;
  for (const ch of `${Deno.hostname()}|${shareGroup ?? ""}|${filter}`) {
    hash = Math.imul(hash ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  }
  return `edgeinfer-${hash.toString(16).padStart(8, "0")}`;
}
