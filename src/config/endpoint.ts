import { UsageError } from "../errors.ts";

/**
 * A source, sink or simulator target given as a URL on the command line:
 *   mqtt://[user:pass@]host:port/<topic or filter>?qos=1&client-id=x&share=group
 *   kafka://host:port[,host:port]/<topic>?group=<id>
 *   file:<path>     one event per line
 *   - | stdout      standard input (as a source) or standard output (as a sink)
 */
export type Endpoint =
  | {
    kind: "mqtt";
    /** mqtt://host:port, without credentials or path. */
    brokerUrl: string;
    username?: string;
    password?: string;
    /** Topic filter (source) or topic template (simulator), URL-decoded; `+` and `#` allowed. */
    topic: string;
    params: URLSearchParams;
  }
  | { kind: "kafka"; brokers: string[]; topic: string; params: URLSearchParams }
  | { kind: "file"; path: string }
  | { kind: "stdio" };

const EXAMPLES = "e.g. mqtt://127.0.0.1:1883/cars/+/sensors, kafka://127.0.0.1:9092/predictions, " +
  "file:events.jsonl or -";

/** Parses an endpoint URL; `flag` names the option in error messages (e.g. "--source"). */
export function parseEndpoint(flag: string, text: string): Endpoint {
  const value = text.trim();
  if (value === "-" || value === "stdout" || value === "stdin") return { kind: "stdio" };
  if (value.startsWith("file:")) {
    const path = value.slice("file:".length).replace(/^\/\/(?=\/)/, "");
    if (path === "") throw new UsageError(`${flag} file: needs a path, e.g. file:events.jsonl`);
    return { kind: "file", path };
  }
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(value)?.[1]?.toLowerCase();
  if (scheme === "mqtt") return parseMqtt(flag, value);
  if (scheme === "kafka") return parseKafka(flag, value);
  throw new UsageError(
    `${flag} '${text}' is not a supported URL (${
      scheme ? `unknown scheme '${scheme}://'` : "no scheme"
    }); ${EXAMPLES}`,
  );
}

function parseMqtt(flag: string, value: string): Endpoint {
  // `+` and `#` are legal in topic filters but `#` starts a URL fragment: escape it first.
  let url: URL;
  try {
    url = new URL(value.replaceAll("#", "%23"));
  } catch {
    throw new UsageError(`${flag} '${value}' is not a valid URL; ${EXAMPLES}`);
  }
  const port = url.port || "1883";
  if (url.hostname === "") throw new UsageError(`${flag} '${value}' has no host; ${EXAMPLES}`);
  const topic = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (topic === "") {
    throw new UsageError(
      `${flag} '${value}' has no topic: put it after the host, e.g. mqtt://127.0.0.1:1883/cars/+/sensors`,
    );
  }
  return {
    kind: "mqtt",
    brokerUrl: `mqtt://${url.hostname}:${port}`,
    username: url.username ? decodeURIComponent(url.username) : undefined,
    password: url.password ? decodeURIComponent(url.password) : undefined,
    topic,
    params: url.searchParams,
  };
}

function parseKafka(flag: string, value: string): Endpoint {
  // The URL class cannot hold a comma-separated host list, so split by hand.
  const rest = value.slice("kafka://".length);
  const query = rest.indexOf("?");
  const hostAndPath = query === -1 ? rest : rest.slice(0, query);
  const params = new URLSearchParams(query === -1 ? "" : rest.slice(query + 1));
  const slash = hostAndPath.indexOf("/");
  const hostList = slash === -1 ? hostAndPath : hostAndPath.slice(0, slash);
  const topic = slash === -1 ? "" : decodeURIComponent(hostAndPath.slice(slash + 1));
  const brokers = hostList.split(",").map((h) => h.trim()).filter((h) => h !== "");
  if (brokers.length === 0) throw new UsageError(`${flag} '${value}' has no broker host; ${EXAMPLES}`);
  for (const broker of brokers) {
    if (!/^[^:/\s]+:\d{1,5}$/.test(broker) && !/^\[[0-9a-f:]+\]:\d{1,5}$/i.test(broker)) {
      throw new UsageError(
        `${flag} broker '${broker}' must be host:port, e.g. kafka://127.0.0.1:9092/predictions`,
      );
    }
  }
  if (topic === "" || !/^[a-zA-Z0-9._-]{1,249}$/.test(topic)) {
    throw new UsageError(
      `${flag} '${value}' needs a Kafka topic of letters, digits, '.', '_' or '-' after the brokers, ` +
        `e.g. kafka://127.0.0.1:9092/predictions`,
    );
  }
  return { kind: "kafka", brokers, topic, params };
}
