/**
 * Where `edgeinfer simulate` writes its events (`--target URL`):
 *   -                                    stdout, one JSON object per line
 *   file:<path>                          a file (created or truncated), one JSON object per line
 *   mqtt://host:port/<topic template>    one PUBLISH per event; `{car}` in the template is replaced
 *                                        by the car id (e.g. cars/{car}/sensors); ?qos=0|1|2 (default 1)
 *   kafka://host:port[,host:port]/<topic> one message per event, keyed by car id
 *
 * A target accepts batches (`write`), applies backpressure by resolving `write` only when it can
 * take more, and delivers everything before `close` resolves.
 */
import { type Logger, rootLogger } from "../log.ts";
import mqtt from "mqtt";
import { mqttCredentials, parseEndpoint } from "../config/endpoint.ts";
import { tlsOptions } from "../mqtt/connect.ts";
import { fatalTlsReason, type TlsFiles } from "../config/tls.ts";
import { oneOf, readQuery } from "../config/query.ts";
import { RuntimeError, UsageError } from "../errors.ts";
import type { OutRecord, Sink } from "../pipeline/types.ts";
import type { CarEvent } from "./fleet.ts";

export interface SimTarget {
  readonly description: string;
  /** Takes a batch; resolves when the target can take the next one (not necessarily delivered). */
  write(events: CarEvent[]): Promise<void>;
  /** Delivers everything written so far, then disconnects. */
  close(): Promise<void>;
}

/** Thrown by `write` when the reader went away (stdout closed, e.g. `| head`): stop quietly. */
export class TargetClosed extends Error {
  override name = "TargetClosed";
}

const FLAG = "--target";

/**
 * Opens the target named by a --target URL. `connections` > 1 (MQTT only): one MQTT connection per car
 * up to that many, each car always on the same one, like a fleet of devices.
 */
export async function openTarget(
  url: string,
  connections = 1,
  logger: Logger = rootLogger,
): Promise<SimTarget> {
  const endpoint = parseEndpoint(FLAG, url);
  switch (endpoint.kind) {
    case "stdio":
      return new StreamTarget("stdout", Deno.stdout, undefined);
    case "file": {
      let file: Deno.FsFile;
      try {
        file = await Deno.open(endpoint.path, { write: true, create: true, truncate: true });
      } catch (err) {
        throw new UsageError(
          `${FLAG} file '${endpoint.path}' cannot be opened for writing: ${(err as Error).message}`,
        );
      }
      return new StreamTarget(`file:${endpoint.path}`, file, file);
    }
    case "mqtt": {
      const q = readQuery(FLAG, endpoint.params, [
        "qos",
        "client-id",
        "max-in-flight",
        "username",
        "password-file",
        "ca",
        "cert",
        "key",
      ]);
      const qos = Number(oneOf(FLAG, "qos", q.get("qos"), ["0", "1", "2"], "1")) as 0 | 1 | 2;
      const maxInFlight = positiveInt("max-in-flight", q.get("max-in-flight"), 2000);
      // The same password sources as `run`: password-file=, the URL, EDGEINFER_MQTT_PASSWORD.
      const { username, password } = mqttCredentials(FLAG, endpoint, q);
      const options = {
        qos,
        maxInFlight,
        clientId: q.get("client-id"),
        username,
        password,
        tls: tlsOptions(FLAG, endpoint.brokerUrl, q),
      };
      if (connections <= 1) return await MqttTarget.connect(endpoint.brokerUrl, endpoint.topic, options);
      return await ConnectionsTarget.open(
        connections,
        (i) =>
          MqttTarget.connect(endpoint.brokerUrl, endpoint.topic, {
            ...options,
            // The window is shared: the same number of messages in flight whatever the connection count.
            maxInFlight: Math.max(1, Math.ceil(maxInFlight / connections)),
            clientId: `${options.clientId ?? "edgeinfer-sim"}-${i}`,
          }),
      );
    }
    case "mqtt-server":
      throw new UsageError(
        `${FLAG} mqtt-server:// is where edgeinfer run listens; simulate publishes to it as a device: ` +
          `use mqtt://host:port/cars/{car}/sensors`,
      );
    case "kafka": {
      if (connections > 1) {
        throw new UsageError("--connections applies to an mqtt:// or mqtts:// --target only");
      }
      // Loaded on demand: the Kafka client is not needed for the other targets.
      const { SECURITY_PARAMS, kafkaSecurity } = await import("../kafka/security.ts");
      const q = readQuery(FLAG, endpoint.params, ["client-id", ...SECURITY_PARAMS]);
      const { createKafkaSink } = await import("../kafka/sink.ts");
      const sink = createKafkaSink({
        brokers: endpoint.brokers,
        topic: endpoint.topic,
        clientId: q.get("client-id") ?? "edgeinfer-simulate",
        security: kafkaSecurity(FLAG, q),
        logger,
      });
      return new SinkTarget(sink.description, sink);
    }
  }
}

function positiveInt(key: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value) || Number(value) < 1) {
    throw new UsageError(`${FLAG} parameter ${key}=${value} must be an integer >= 1`);
  }
  return Number(value);
}

/** Serializes a batch as JSON lines. */
export function toJsonLines(events: readonly CarEvent[]): string {
  let text = "";
  for (let i = 0; i < events.length; i++) text += JSON.stringify(events[i]) + "\n";
  return text;
}

const encoder = new TextEncoder();

/** stdout or a file: JSON lines, one write per batch. */
export class StreamTarget implements SimTarget {
  readonly description: string;
  readonly #out: { write(p: Uint8Array): Promise<number> };
  readonly #file: Deno.FsFile | undefined;

  constructor(
    description: string,
    out: { write(p: Uint8Array): Promise<number> },
    file: Deno.FsFile | undefined,
  ) {
    this.description = description;
    this.#out = out;
    this.#file = file;
  }

  async write(events: CarEvent[]): Promise<void> {
    const bytes = encoder.encode(toJsonLines(events));
    let written = 0;
    try {
      while (written < bytes.length) written += await this.#out.write(bytes.subarray(written));
    } catch (err) {
      if (err instanceof Deno.errors.BrokenPipe) {
        throw new TargetClosed(`${this.description} was closed by the reader`);
      }
      throw err;
    }
  }

  async close(): Promise<void> {
    if (this.#file !== undefined) {
      await this.#file.syncData();
      this.#file.close();
    }
  }
}

/** Replaces `{car}` in an MQTT topic template. */
export function expandTopic(template: string, car: string): string {
  return template.replaceAll("{car}", car);
}

interface MqttTargetOptions {
  qos: 0 | 1 | 2;
  maxInFlight: number;
  clientId: string | undefined;
  username: string | undefined;
  password: string | undefined;
  /** mqtts://: the CA to verify the broker with, and a client certificate (always verified). */
  tls: TlsFiles | undefined;
}

/**
 * One PUBLISH per event, without waiting for each acknowledgement: up to `maxInFlight`
 * unacknowledged QoS 1/2 messages are kept in flight and `write` waits only when that window is
 * full. `close` waits for every PUBACK (or PUBCOMP) before disconnecting.
 */
class MqttTarget implements SimTarget {
  readonly description: string;
  readonly #client: mqtt.MqttClient;
  readonly #template: string;
  readonly #options: MqttTargetOptions;
  #inFlight = 0;
  #failure: Error | undefined;
  #wake: (() => void) | undefined;

  private constructor(
    description: string,
    client: mqtt.MqttClient,
    template: string,
    options: MqttTargetOptions,
  ) {
    this.description = description;
    this.#client = client;
    this.#template = template;
    this.#options = options;
    client.on("error", (err) => this.#fail(err));
  }

  static async connect(brokerUrl: string, template: string, options: MqttTargetOptions): Promise<MqttTarget> {
    if (/[+#]/.test(template)) {
      throw new UsageError(
        `${FLAG} topic '${template}' contains a wildcard (+ or #); a publish topic must be concrete, ` +
          `e.g. mqtt://127.0.0.1:1883/cars/{car}/sensors`,
      );
    }
    const description = `${brokerUrl}/${template} (qos ${options.qos})`;
    let client: mqtt.MqttClient;
    try {
      client = await mqtt.connectAsync(brokerUrl, {
        clientId: options.clientId ?? `edgeinfer-sim-${crypto.randomUUID().slice(0, 8)}`,
        username: options.username,
        password: options.password,
        clean: true,
        connectTimeout: 10_000,
        reconnectPeriod: 1_000,
        ...(options.tls
          ? { ca: options.tls.ca, cert: options.tls.cert, key: options.tls.key, rejectUnauthorized: true }
          : {}),
      }, false);
    } catch (err) {
      const reason = fatalTlsReason(err as Error, options.tls, FLAG) ??
        ((err as Error).message || String(err));
      throw new RuntimeError(`cannot connect to ${brokerUrl}: ${reason}`);
    }
    return new MqttTarget(description, client, template, options);
  }

  #fail(err: Error): void {
    this.#failure ??= new RuntimeError(`MQTT publish to ${this.description} failed: ${err.message}`);
    this.#wakeUp();
  }

  #wakeUp(): void {
    this.#wake?.();
  }

  /** Resolves once at most `limit` messages are unacknowledged (or the connection failed). */
  #waitBelow(limit: number): Promise<void> {
    return new Promise((resolve) => {
      const check = () => {
        if (this.#inFlight > limit && !this.#failure) return;
        this.#wake = undefined;
        resolve();
      };
      this.#wake = check;
      check();
    });
  }

  async write(events: CarEvent[]): Promise<void> {
    if (this.#failure) throw this.#failure;
    const { qos, maxInFlight } = this.#options;
    const opts = { qos };
    for (let i = 0; i < events.length; i++) {
      const event = events[i];
      if (this.#inFlight >= maxInFlight) {
        await this.#waitBelow(maxInFlight - 1);
        if (this.#failure) throw this.#failure;
      }
      this.#inFlight++;
      this.#client.publish(expandTopic(this.#template, event.car), JSON.stringify(event), opts, (err) => {
        this.#inFlight--;
        if (err) this.#fail(err);
        else this.#wakeUp();
      });
    }
  }

  async close(): Promise<void> {
    try {
      await this.#waitBelow(0);
      if (this.#failure) throw this.#failure;
    } finally {
      await this.#client.endAsync();
    }
  }
}

/** Several MQTT connections, like devices: each car publishes on one of them, always the same. */
class ConnectionsTarget implements SimTarget {
  readonly description: string;
  readonly #connectionOf = new Map<string, number>();

  private constructor(private readonly targets: MqttTarget[]) {
    this.description = `${targets[0].description} over ${targets.length} connections`;
  }

  static async open(
    count: number,
    connect: (index: number) => Promise<MqttTarget>,
  ): Promise<ConnectionsTarget> {
    const targets: MqttTarget[] = [];
    try {
      // In groups, so that a large fleet does not hit the server with thousands of handshakes at once.
      for (let first = 0; first < count; first += 100) {
        const group = Array.from({ length: Math.min(100, count - first) }, (_, i) => connect(first + i));
        targets.push(...await Promise.all(group));
      }
    } catch (err) {
      await Promise.all(targets.map((t) => t.close().catch(() => {})));
      throw err;
    }
    return new ConnectionsTarget(targets);
  }

  async write(events: CarEvent[]): Promise<void> {
    const parts: CarEvent[][] = this.targets.map(() => []);
    for (const event of events) {
      let index = this.#connectionOf.get(event.car);
      if (index === undefined) {
        index = this.#connectionOf.size % this.targets.length;
        this.#connectionOf.set(event.car, index);
      }
      parts[index].push(event);
    }
    await Promise.all(parts.map((part, i) => part.length > 0 ? this.targets[i].write(part) : undefined));
  }

  async close(): Promise<void> {
    await Promise.all(this.targets.map((t) => t.close()));
  }
}

/**
 * Kafka through the shared Kafka sink: messages keyed by car. Up to 4 batches are sent
 * concurrently; `close` waits for all of them.
 */
class SinkTarget implements SimTarget {
  readonly description: string;
  readonly #sink: Sink;
  readonly #pending = new Set<Promise<void>>();
  #failure: unknown;

  constructor(description: string, sink: Sink) {
    this.description = description;
    this.#sink = sink;
  }

  async write(events: CarEvent[]): Promise<void> {
    if (this.#failure) throw this.#failure;
    const records: OutRecord[] = new Array(events.length);
    for (let i = 0; i < events.length; i++) {
      records[i] = { key: events[i].car, value: JSON.stringify(events[i]), headers: {} };
    }
    const sent: Promise<void> = this.#sink.send(records).then((refused) => {
      // Simulated events are small; a refusal means the target is misconfigured.
      if (refused && refused.length > 0) throw new Error(`the target refused an event: ${refused[0].reason}`);
    }).catch((err) => {
      this.#failure ??= err;
    }).finally(() => this.#pending.delete(sent));
    this.#pending.add(sent);
    while (this.#pending.size >= 4) await Promise.race(this.#pending);
    if (this.#failure) throw this.#failure;
  }

  async close(): Promise<void> {
    try {
      await Promise.all(this.#pending);
      if (this.#failure) throw this.#failure;
    } finally {
      await this.#sink.close();
    }
  }
}
