import { parseEndpoint } from "../config/endpoint.ts";
import { readQuery } from "../config/query.ts";
import { UsageError } from "../errors.ts";
import type { Sink } from "../pipeline/types.ts";
import { createKafkaSink } from "./kafka.ts";
import { createStreamSink } from "./stream.ts";

/** Builds the sink named by a --sink or --dlq URL. */
export function createSink(flag: string, url: string): Promise<Sink> {
  const endpoint = parseEndpoint(flag, url);
  switch (endpoint.kind) {
    case "stdio":
      return createStreamSink("stdout");
    case "file":
      return createStreamSink(endpoint.path);
    case "kafka": {
      const q = readQuery(flag, endpoint.params, ["client-id"]);
      return Promise.resolve(createKafkaSink({
        brokers: endpoint.brokers,
        topic: endpoint.topic,
        clientId: q.get("client-id") ?? "edgeinfer",
      }));
    }
    case "mqtt":
      throw new UsageError(`${flag} cannot write to MQTT; use kafka://host:port/<topic>, file:<path> or -`);
  }
}
