import { UsageError } from "../errors.ts";

/**
 * A source, sink or simulator target given as a URL on the command line:
 *   mqtt://[user:pass@]host:port/<topic or filter>?qos=1&client-id=x&share=group
 *   mqtts://host:port/<filter>?ca=PATH&cert=PATH&key=PATH   (MQTT over TLS, default port 8883)
 *   mqtt-server://host:port/<filter>?users=PATH&acl=…   (edgeinfer is the MQTT server devices connect to)
 *   mqtts-server://host:port/<filter>?cert=PATH&key=PATH&ca=PATH   (the same over TLS, default port 8883)
 *   kafka://host:port[,host:port]/<topic>?group=<id>
 *   file:<path>     one event per line
 *   - | stdout      standard input (as a source) or standard output (as a sink)
 */
export type Endpoint =
  | {
    kind: "mqtt";
    /** mqtt://host:port or mqtts://host:port, without credentials or path. */
    brokerUrl: string;
    username?: string;
    password?: string;
    /** Topic filter (source) or topic template (simulator), URL-decoded; `+` and `#` allowed. */
    topic: string;
    params: URLSearchParams;
  }
  | {
    kind: "mqtt-server";
    /** mqtts-server://: devices connect over TLS. */
    tls: boolean;
    /** The address to listen on, e.g. 127.0.0.1 or 0.0.0.0 (all interfaces). */
    host: string;
    port: number;
    /** The topic filter devices publish under, URL-decoded; `+` and `#` allowed. */
    topic: string;
    params: URLSearchParams;
  }
  | { kind: "kafka"; brokers: string[]; topic: string; params: URLSearchParams }
  | { kind: "file"; path: string }
  | { kind: "stdio" };

const EXAMPLES = "e.g. mqtt://127.0.0.1:1883/cars/+/sensors, kafka://127.0.0.1:9092/predictions, " +
  "file:events.jsonl or -";

/**
 * Masks the password of every `scheme://user:password@` in `text` (`scheme://user:***@`), for
 * messages and logs. The password runs to the last `@` before the first `/`, `?`, `#` or space
 * (the URL parser's rule, as far as free text allows).
 */
export function maskUrl(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)([^\s/?#:]*):[^\s/?#]*@/gi, "$1$2:***@");
}

/**
 * One whole endpoint value as error messages may show it: the URL parser's userinfo (to the last
 * `@` before `/`, `?` or `#`, spaces included) masked, also when the scheme was left out.
 */
function shown(value: string): string {
  return maskUrl(value.replace(/^((?:[a-z][a-z0-9+.-]*:\/\/)?)([^/?#:]*):[^/?#]*@/i, "$1$2:***@"));
}

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
  if (scheme === "mqtt" || scheme === "mqtts") return parseMqtt(flag, value, scheme);
  if (scheme === "mqtt-server" || scheme === "mqtts-server") return parseMqttServer(flag, value, scheme);
  if (scheme === "kafka") return parseKafka(flag, value);
  throw new UsageError(
    `${flag} '${shown(value)}' is not a supported URL (${
      scheme ? `unknown scheme '${scheme}://'` : "no scheme"
    }); ${EXAMPLES}`,
  );
}

function parseMqtt(flag: string, value: string, scheme: "mqtt" | "mqtts"): Endpoint {
  // `+` and `#` are legal in topic filters but `#` starts a URL fragment: escape it first.
  let url: URL;
  try {
    url = new URL(value.replaceAll("#", "%23"));
  } catch {
    // The parser did not find the userinfo's end (e.g. a '/' in the password): hide all of it.
    const hidden = shown(value).replace(/^([a-z][a-z0-9+.-]*:\/\/).*@/is, "$1***@");
    throw new UsageError(`${flag} '${hidden}' is not a valid URL; ${EXAMPLES}`);
  }
  const port = url.port || (scheme === "mqtts" ? "8883" : "1883");
  if (url.hostname === "") throw new UsageError(`${flag} '${shown(value)}' has no host; ${EXAMPLES}`);
  const topic = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (topic === "") {
    throw new UsageError(
      `${flag} '${shown(value)}' has no topic: put it after the host, ` +
        `e.g. mqtt://127.0.0.1:1883/cars/+/sensors`,
    );
  }
  return {
    kind: "mqtt",
    brokerUrl: `${scheme}://${url.hostname}:${port}`,
    username: url.username ? decodeUserinfo(url.username) : undefined,
    password: url.password ? decodeUserinfo(url.password) : undefined,
    topic,
    params: url.searchParams,
  };
}

function parseMqttServer(flag: string, value: string, scheme: "mqtt-server" | "mqtts-server"): Endpoint {
  const example = "e.g. mqtt-server://0.0.0.0:1883/cars/+/sensors?users=/etc/edgeinfer/users";
  let url: URL;
  try {
    url = new URL(value.replaceAll("#", "%23"));
  } catch {
    throw new UsageError(`${flag} '${shown(value)}' is not a valid URL; ${example}`);
  }
  if (url.username || url.password) {
    throw new UsageError(
      `${flag} '${shown(value)}' has user info, which the MQTT server does not take: ` +
        `devices log in with the accounts of users=PATH`,
    );
  }
  if (url.hostname === "") {
    throw new UsageError(`${flag} '${shown(value)}' needs the address to listen on; ${example}`);
  }
  const topic = decodeURIComponent(url.pathname.replace(/^\//, ""));
  if (topic === "") {
    throw new UsageError(`${flag} '${shown(value)}' needs the topic filter devices publish to; ${example}`);
  }
  return {
    kind: "mqtt-server",
    tls: scheme === "mqtts-server",
    host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
    port: Number(url.port || (scheme === "mqtts-server" ? "8883" : "1883")),
    topic,
    params: url.searchParams,
  };
}

/** Percent-decodes a user name or password; a stray '%' is kept as typed (never an error echoing it). */
function decodeUserinfo(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
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
  if (hostList.includes("@")) {
    throw new UsageError(
      `${flag} '${shown(value).replace(/^kafka:\/\/[^/?#]*@/i, "kafka://***@")}' has user info (user@ or ` +
        `user:password@), which Kafka URLs do not take: use sasl=scram-sha-512&username=NAME with the ` +
        `password in EDGEINFER_KAFKA_PASSWORD or password-file=PATH`,
    );
  }
  const brokers = hostList.split(",").map((h) => h.trim()).filter((h) => h !== "");
  if (brokers.length === 0) {
    throw new UsageError(`${flag} '${shown(value)}' has no broker host; ${EXAMPLES}`);
  }
  for (const broker of brokers) {
    if (!/^[^:/\s]+:\d{1,5}$/.test(broker) && !/^\[[0-9a-f:]+\]:\d{1,5}$/i.test(broker)) {
      throw new UsageError(
        `${flag} broker '${broker}' must be host:port, e.g. kafka://127.0.0.1:9092/predictions`,
      );
    }
  }
  if (topic === "" || !/^[a-zA-Z0-9._-]{1,249}$/.test(topic)) {
    throw new UsageError(
      `${flag} '${
        shown(value)
      }' needs a Kafka topic of letters, digits, '.', '_' or '-' after the brokers, ` +
        `e.g. kafka://127.0.0.1:9092/predictions`,
    );
  }
  return { kind: "kafka", brokers, topic, params };
}

/** The environment variable that can carry the MQTT password (not visible in `ps`, unlike argv). */
export const MQTT_PASSWORD_ENV = "EDGEINFER_MQTT_PASSWORD";

/** Where an MQTT password came from, for messages (never the password itself). */
export type PasswordOrigin = "password-file" | "url" | "env";

/**
 * The MQTT user name and password of an endpoint. Query parameters `username` and
 * `password-file` must have been allowed by readQuery (`query`).
 *
 * Password, first found wins:
 *   1. `password-file=PATH`: the file's content, trailing newline(s) stripped (e.g. a mounted
 *      secret). A missing, unreadable or empty file is a UsageError naming the path.
 *   2. `mqtt://user:password@host/…`: works, but argv is visible to every user in `ps`.
 *   3. the EDGEINFER_MQTT_PASSWORD environment variable (ignored when empty).
 * User name: `mqtt://user@host/…` or `username=NAME`, not both.
 */
export function mqttCredentials(
  flag: string,
  endpoint: { username?: string; password?: string },
  query: Map<string, string>,
  env: (name: string) => string | undefined = readEnv,
): { username?: string; password?: string; passwordFrom?: PasswordOrigin } {
  const queryUser = query.get("username");
  if (queryUser !== undefined && endpoint.username !== undefined) {
    throw new UsageError(
      `${flag} gives the MQTT user name twice: use user@host in the URL or username=, not both`,
    );
  }
  if (queryUser === "") throw new UsageError(`${flag} username= must not be empty`);
  const username = queryUser ?? endpoint.username;

  const file = query.get("password-file");
  if (file !== undefined) {
    return { username, password: readPasswordFile(flag, file), passwordFrom: "password-file" };
  }
  if (endpoint.password !== undefined) return { username, password: endpoint.password, passwordFrom: "url" };
  const fromEnv = env(MQTT_PASSWORD_ENV);
  if (fromEnv !== undefined && fromEnv !== "") return { username, password: fromEnv, passwordFrom: "env" };
  return { username };
}

/**
 * The content of `password-file=PATH` (e.g. a mounted secret), trailing newline(s) stripped. A missing,
 * unreadable or empty file is a UsageError naming the path, never the content.
 */
export function readPasswordFile(flag: string, file: string): string {
  if (file === "") {
    throw new UsageError(`${flag} password-file= needs a path, e.g. password-file=/run/secrets/broker`);
  }
  let content: string;
  try {
    content = Deno.readTextFileSync(file);
  } catch (err) {
    const reason = err instanceof Deno.errors.NotFound ? "no such file" : (err as Error).message;
    throw new UsageError(`${flag} password-file=${file} cannot be read (${reason})`);
  }
  const password = content.replace(/[\r\n]+$/, "");
  if (password === "") throw new UsageError(`${flag} password-file=${file} is empty`);
  return password;
}

export function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: as if unset
  }
}
