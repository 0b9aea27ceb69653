import { type Endpoint, parseEndpoint } from "../config/endpoint.ts";
import { oneOf, readQuery } from "../config/query.ts";
import { UsageError } from "../errors.ts";
import type { Source } from "../pipeline/types.ts";
import { createFileSource } from "./file.ts";
import { createKafkaSource } from "./kafka.ts";
import { createMqttSource } from "./mqtt.ts";

/**
 * Builds the source named by a --source URL. Throws UsageError for a bad URL or parameter.
 * `bufferEvents` bounds what a source may hold un-acknowledged (MQTT's receive window).
 */
export function createSource(url: string, bufferEvents = 65535): Source {
  const flag = "--source";
  const endpoint: Endpoint = parseEndpoint(flag, url);
  switch (endpoint.kind) {
    case "stdio":
      return createFileSource("stdin");
    case "file":
      return createFileSource(endpoint.path);
    case "mqtt": {
      const q = readQuery(flag, endpoint.params, ["qos", "client-id", "share", "version"]);
      const qos = Number(oneOf(flag, "qos", q.get("qos"), ["0", "1", "2"], "1")) as 0 | 1 | 2;
      const protocolVersion = Number(oneOf(flag, "version", q.get("version"), ["4", "5"], "5")) as 4 | 5;
      const shareGroup = q.get("share");
      if (shareGroup !== undefined && protocolVersion !== 5) {
        throw new UsageError(`${flag} share=${shareGroup} needs MQTT 5: drop version=4`);
      }
      return createMqttSource({
        brokerUrl: endpoint.brokerUrl,
        username: endpoint.username,
        password: endpoint.password,
        topicFilter: endpoint.topic,
        qos,
        // A stable default id: the broker keeps a persistent session per client id, so a
        // restarted edgeinfer must come back under the same one to receive what was queued.
        clientId: q.get("client-id") ?? defaultClientId(endpoint.topic, shareGroup),
        shareGroup,
        protocolVersion,
        maxInFlight: Math.min(65535, Math.max(1, bufferEvents)),
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
