import { parseEndpoint } from "../config/endpoint.ts";
import { readQuery } from "../config/query.ts";
import { UsageError } from "../errors.ts";
import type { Sink } from "../pipeline/types.ts";
import type { Health } from "../pipeline/health.ts";
import { createKafkaSink, DEFAULT_MAX_RECORD_BYTES } from "./kafka.ts";
import { createStreamSink } from "./stream.ts";

/** Builds the sink named by a --sink or --dlq URL; `health` hears of its outages and fatal failures. */
export function createSink(flag: string, url: string, options: { health?: Health } = {}): Promise<Sink> {
  const endpoint = parseEndpoint(flag, url);
  switch (endpoint.kind) {
    case "stdio":
      return createStreamSink("stdout");
    case "file":
      return createStreamSink(endpoint.path);
    case "kafka": {
      const q = readQuery(flag, endpoint.params, ["client-id", "max-record-bytes"]);
      const maxRecordBytes = q.get("max-record-bytes");
      if (maxRecordBytes !== undefined && !/^[1-9]\d*$/.test(maxRecordBytes)) {
        throw new UsageError(
          `${flag} parameter max-record-bytes=${maxRecordBytes} must be a positive integer (the topic's ` +
            `max.message.bytes, default ${DEFAULT_MAX_RECORD_BYTES})`,
        );
      }
      return Promise.resolve(createKafkaSink({
        brokers: endpoint.brokers,
        topic: endpoint.topic,
        clientId: q.get("client-id") ?? "edgeinfer",
        maxRecordBytes: maxRecordBytes === undefined ? undefined : Number(maxRecordBytes),
        health: options.health,
      }));
    }
    case "mqtt":
      throw new UsageError(`${flag} cannot write to MQTT; use kafka://host:port/<topic>, file:<path> or -`);
  }
}
