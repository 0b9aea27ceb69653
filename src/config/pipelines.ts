/**
 * Several pipelines in one process (`pipelines:` in a config file): which keys hold for the whole process,
 * how a pipeline inherits the top level's keys, and which pipelines would get in each other's way.
 */
import { resolve } from "node:path";
import { UsageError } from "../errors.ts";
import { type Endpoint, parseEndpoint } from "./endpoint.ts";
import type { RunSettings } from "./file.ts";

/**
 * Settings of the process, not of one pipeline: only at the top level of a file with `pipelines:`, and the
 * only flags the command line may add to such a file.
 */
export const PROCESS_KEYS: readonly string[] = [
  "quiet",
  "status-every",
  "shutdown-timeout",
  "http",
  "log-format",
  "log-level",
  "log-timestamps",
];

/** Pipeline names prefix log lines: `[cars] status: …`. */
export const PIPELINE_NAME = /^[A-Za-z0-9_-]+$/;

/** A pipeline's settings: the top level's (process-wide keys aside), its own keys winning. */
export function inheritDefaults(top: RunSettings, own: RunSettings): RunSettings {
  const defaults = Object.entries(top).filter(([key]) => !PROCESS_KEYS.includes(key));
  return { ...Object.fromEntries(defaults), ...own };
}

/**
 * Refuses pipelines that would fight over something only one of them can hold: a --buffer DIR (locked by
 * one process), an MQTT client id on one broker (the broker drops the older connection), a Kafka group on
 * one topic (the pipelines would split its partitions, each scoring half of the events), a sink file.
 */
export function checkPipelinesApart(path: string, pipelines: Record<string, RunSettings>): void {
  const claimed = new Map<string, string>();
  const claim = (name: string, key: string, what: string, fix: string) => {
    const other = claimed.get(what);
    if (other !== undefined && other !== name) {
      throw new UsageError(`${path}: pipelines.${name}.${key}: ${what} is also pipelines.${other}'s; ${fix}`);
    }
    claimed.set(what, name);
  };
  for (const [name, settings] of Object.entries(pipelines)) {
    const url = (key: string) => {
      const value = settings[key];
      return typeof value === "string"
        ? parseEndpoint(`${path}: pipelines.${name}.${key}`, value)
        : undefined;
    };
    if (settings.buffer !== undefined) {
      claim(name, "buffer", `buffer ${resolve(String(settings.buffer))}`, "give each pipeline its own DIR");
    }
    if (settings["model-cache"] !== undefined) {
      claim(
        name,
        "model-cache",
        `model cache ${resolve(String(settings["model-cache"]))}`,
        "give each pipeline its own DIR",
      );
    }
    const source = url("source");
    if (source?.kind === "mqtt") {
      claim(
        name,
        "source",
        `the MQTT session ${mqttSession(source)} on ${source.brokerUrl}`,
        "give each pipeline its own client-id=",
      );
    }
    if (source?.kind === "mqtt-server") {
      claim(name, "source", `port ${source.port} on ${source.host}`, "give each pipeline its own port");
    }
    if (source?.kind === "kafka") {
      claim(
        name,
        "source",
        `group ${source.params.get("group") ?? "edgeinfer"} on topic ${source.topic}`,
        "give each pipeline its own group=",
      );
    }
    if (source?.kind === "stdio") claim(name, "source", "standard input", "only one pipeline can read it");
    for (const key of ["sink", "dlq"]) {
      const sink = url(key);
      if (sink?.kind === "file") claim(name, key, `file ${resolve(sink.path)}`, "write to different files");
    }
  }
}

/** The client id the source will use: client-id=, or the default derived from the filter and share group. */
function mqttSession(source: Extract<Endpoint, { kind: "mqtt" }>): string {
  const id = source.params.get("client-id");
  if (id !== null) return `client-id=${id}`;
  const share = source.params.get("share");
  return `of filter ${source.topic}${share === null ? "" : ` share=${share}`} (default client id)`;
}
