/**
 * The registry of transports: which folder builds the source or sink a URL names. A new transport is
 * one folder (its source and/or sink, and a connect.ts reading its URL) plus one case here.
 */
import { parseEndpoint } from "./config/endpoint.ts";
import { UsageError } from "./errors.ts";
import { createFileSource } from "./files/source.ts";
import { createStreamSink } from "./files/sink.ts";
import { kafkaSink, kafkaSource } from "./kafka/connect.ts";
import { mqttSink, mqttSource } from "./mqtt/connect.ts";
import { mqttServerSource } from "./mqtt_server/connect.ts";
import type { Health } from "./pipeline/health.ts";
import type { Logger } from "./log.ts";
import type { Sink, Source } from "./pipeline/types.ts";

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
  /** Where the source's own lines go (connections, subscriptions); default: the root logger. */
  logger?: Logger;
  /** mqtt-server://: the filter devices may subscribe within (the alerts' topics); absent: none. */
  deviceSubscriptions?: string;
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
  const endpoint = parseEndpoint(flag, url);
  switch (endpoint.kind) {
    case "stdio":
      return createFileSource("stdin");
    case "file":
      return createFileSource(endpoint.path);
    case "mqtt":
      return mqttSource(flag, endpoint, limits);
    case "mqtt-server":
      return mqttServerSource(flag, endpoint, limits);
    case "kafka":
      return kafkaSource(flag, endpoint, limits);
  }
}

/** Builds the sink named by a --sink or --dlq URL; `health` hears of its outages and fatal failures. */
export async function createSink(
  flag: string,
  url: string,
  options: { health?: Health; logger?: Logger } = {},
): Promise<Sink> {
  const endpoint = parseEndpoint(flag, url);
  switch (endpoint.kind) {
    case "stdio":
      return await createStreamSink("stdout");
    case "file":
      return await createStreamSink(endpoint.path);
    case "kafka":
      return kafkaSink(flag, endpoint, options);
    case "mqtt":
      return mqttSink(flag, endpoint, options);
    case "mqtt-server":
      throw new UsageError(
        `${flag} mqtt-server:// is a source (devices publish to it); use mqtt://host:port/<topic>, kafka://host:port/<topic>, file:<path> or -`,
      );
  }
}
