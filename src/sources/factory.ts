import { type Endpoint, MQTT_PASSWORD_ENV, mqttCredentials, parseEndpoint } from "../config/endpoint.ts";
import { oneOf, readQuery } from "../config/query.ts";
import { UsageError } from "../errors.ts";
import type { Health } from "../pipeline/health.ts";
import type { Source } from "../pipeline/types.ts";
import { createFileSource } from "./file.ts";
import { createKafkaSource } from "./kafka.ts";
import { createMqttSource } from "./mqtt.ts";

/** What a source may hold (received, not acknowledged), and where it reports outages. */
export interface SourceLimits {
  /** Events held at which the source stops reading (also MQTT's receive window). */
  maxHeldEvents: number;
  /** Payload bytes held at which the source stops reading. */
  maxHeldBytes: number;
  /** Payloads larger than this are cut to `keepOversizeBytes` on arrival (they are dead-lettered). */
  maxPayloadBytes: number;
  keepOversizeBytes: number;
  health?: Health;
}

const DEFAULT_LIMITS: SourceLimits = {
  maxHeldEvents: 1280,
  maxHeldBytes: 64 << 20,
  maxPayloadBytes: 1 << 20,
  keepOversizeBytes: 64 << 10,
};

/** Builds the source named by a --source URL. Throws UsageError for a bad URL or parameter. */
export function createSource(url: string, limits: SourceLimits = DEFAULT_LIMITS): Source {
  const flag = "--source";
  const endpoint: Endpoint = parseEndpoint(flag, url);
  switch (endpoint.kind) {
    case "stdio":
      return createFileSource("stdin");
    case "file":
      return createFileSource(endpoint.path);
    case "mqtt": {
      const q = readQuery(flag, endpoint.params, [
        "qos",
        "client-id",
        "share",
        "version",
        "username",
        "password-file",
      ]);
      const qos = Number(oneOf(flag, "qos", q.get("qos"), ["0", "1", "2"], "1")) as 0 | 1 | 2;
      const protocolVersion = Number(oneOf(flag, "version", q.get("version"), ["4", "5"], "5")) as 4 | 5;
      const shareGroup = q.get("share");
      if (shareGroup !== undefined && protocolVersion !== 5) {
        throw new UsageError(`${flag} share=${shareGroup} needs MQTT 5: drop version=4`);
      }
      // Password: password-file=PATH, else the URL's user:password@, else $EDGEINFER_MQTT_PASSWORD.
      const { username, password, passwordFrom } = mqttCredentials(flag, endpoint, q);
      if (password !== undefined && username === undefined && protocolVersion === 4) {
        const from = passwordFrom === "env" ? MQTT_PASSWORD_ENV : passwordFrom;
        throw new UsageError(
          `${flag} has a password (from ${from}) but no user name, which MQTT 3.1.1 (version=4) ` +
            `does not allow: add username=NAME`,
        );
      }
      return createMqttSource({
        brokerUrl: endpoint.brokerUrl,
        username,
        password,
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
      });
    }
    case "kafka": {
      const q = readQuery(flag, endpoint.params, ["group", "from", "client-id"]);
      return createKafkaSource({
        brokers: endpoint.brokers,
        topic: endpoint.topic,
        groupId: q.get("group") ?? "edgeinfer",
        clientId: q.get("client-id") ?? "edgeinfer",
        fromBeginning: oneOf(flag, "from", q.get("from"), ["earliest", "latest"], "earliest") === "earliest",
        ...limits,
      });
    }
  }
}

function defaultClientId(filter: string, shareGroup: string | undefined): string {
  // FNV-1a of host + filter: short, stable, and different for different subscriptions.
  let hash = 0x811c9dc5;
  for (const ch of `${Deno.hostname()}|${shareGroup ?? ""}|${filter}`) {
    hash = Math.imul(hash ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  }
  return `edgeinfer-${hash.toString(16).padStart(8, "0")}`;
}
