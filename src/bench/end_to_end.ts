/**
 * End-to-end throughput of `edgeinfer run`, source → model → sink, per batch size: what
 * `edgeinfer bench --source URL --sink URL` measures (and scripts/bench.ts, for the README).
 *
 * The source is filled first, then `edgeinfer run` is started as a child process (this very
 * program, so the figures are those of the real command with its real memory) with
 * `--max-events N`; the figures come from its summary line, peak RSS from `ps` while it runs.
 *
 *   file:<path>   the events are written to <path> (created or truncated) once
 *   kafka://…/T   the events are produced once, with edgeinfer's own Kafka sink, to a new topic
 *                 T-<run id> (the broker creates it); each batch size reads it with a new group
 *   mqtt://…/T    for each batch size, a new persistent session subscribes to T, then the events
 *                 are published at QoS 1 and the broker queues them: the figure is edgeinfer's
 *                 drain rate, not the publisher's
 */
import { fileURLToPath } from "node:url";
import { maskUrl, mqttCredentials, parseEndpoint } from "../config/endpoint.ts";
import { oneOf, readQuery } from "../config/query.ts";
import { RuntimeError, UsageError } from "../errors.ts";
import { DEFAULT_RETRY, Health } from "../pipeline/health.ts";

export interface EndToEndOptions {
  model: string;
  format: "json" | "delimited";
  features?: string[];
  threads: number;
  /** --source and --sink URLs as the user gave them. */
  source: string;
  sink: string;
  batchSizes: number[];
  /** The event payloads; each batch size's run scores all of them. */
  events: string[];
  /** How to start edgeinfer (default: this program, see edgeinferCommand). */
  command?: string[];
  /** Progress, one short line at a time. */
  onProgress?: (line: string) => void;
  /** A run whose acknowledged count does not move for this long is stopped (default 60 s). */
  stallMs?: number;
  /** A name for this invocation, in topics, groups and client ids (default: random). */
  tag?: string;
}

/** The figures of one `edgeinfer run`, from its summary line. */
export interface RunSummary {
  acked: number;
  /** Events acknowledged per second from the first event to the last ack (connect time excluded). */
  eventsPerSecond: number;
  predictions: number;
  anomalies: number;
  deadLettered: number;
  batches: number;
  meanBatch: number;
  /** Seconds from the first event to the end. */
  seconds: number;
  peakInFlightBatches: number;
  peakInFlightEvents: number;
}

export interface EndToEndResult extends RunSummary {
  batchSize: number;
  /** The source and sink the run used (passwords masked). */
  source: string;
  sink: string;
  /** The whole child process, start-up and connecting included. */
  wallSeconds: number;
  /** Peak resident memory of the edgeinfer process, MB, sampled every 200 ms; null without `ps`. */
  peakRssMB: number | null;
}

const SUMMARY = new RegExp(
  String.raw`done: (\d+) events acked \((\d+)/s\), (\d+) predictions, (\d+) anomalies, (\d+) dead-lettered` +
    String.raw`.*?, (\d+) batches \(mean ([\d.]+)\).*? in ([\d.]+) s from the first event; ` +
    String.raw`peak (\d+) batches / (\d+) events in flight`,
);

/** Reads the figures from `edgeinfer run`'s "done:" line; undefined when there is none. */
export function parseRunSummary(stderr: string): RunSummary | undefined {
  const m = SUMMARY.exec(stderr);
  if (m === null) return undefined;
  const n = m.slice(1).map(Number);
  return {
    acked: n[0],
    eventsPerSecond: n[1],
    predictions: n[2],
    anomalies: n[3],
    deadLettered: n[4],
    batches: n[5],
    meanBatch: n[6],
    seconds: n[7],
    peakInFlightBatches: n[8],
    peakInFlightEvents: n[9],
  };
}

const PERMISSIONS = [
  "--allow-read",
  "--allow-write",
  "--allow-net",
  "--allow-env",
  "--allow-ffi",
  "--allow-sys",
];

/**
 * The command line that starts this edgeinfer: the compiled binary itself, or `deno run … main.ts`
 * (with the project's deno.json, so that the imports resolve from any working directory).
 */
export function edgeinferCommand(): string[] {
  const exe = Deno.execPath();
  if (!/^deno(\.exe)?$/i.test(exe.split(/[\\/]/).pop() ?? "")) return [exe];
  const root = new URL("../../", import.meta.url);
  const config = fileURLToPath(new URL("deno.json", root));
  let hasConfig = true;
  try {
    Deno.statSync(config);
  } catch {
    hasConfig = false;
  }
  return [
    exe,
    "run",
    ...PERMISSIONS,
    ...(hasConfig ? ["--config", config] : []),
    fileURLToPath(new URL("main.ts", root)),
  ];
}

/** How one source is filled, and the --source URL each batch size's run reads. */
interface Plan {
  description: string;
  /** Called once before the first run. */
  fillOnce?: () => Promise<void>;
  /** Called before each run; returns the --source URL of that run. */
  beforeRun: (batch: number) => Promise<string>;
}

/** Checks the --source URL for bench and says how it is filled. UsageError for what bench cannot fill. */
function planSource(options: EndToEndOptions, tag: string, progress: (line: string) => void): Plan {
  const flag = "--source";
  const { events } = options;
  const endpoint = parseEndpoint(flag, options.source);
  const own = { kafka: ["group", "from"], mqtt: ["client-id", "share"] }[endpoint.kind as "kafka" | "mqtt"] ??
    [];
  for (const key of own) {
    if (endpoint.kind !== "file" && endpoint.kind !== "stdio" && endpoint.params.has(key)) {
      throw new UsageError(
        `bench starts each run with a new ${endpoint.kind === "kafka" ? "consumer group" : "session"}, ` +
          `so that it reads exactly the events it queued: drop ${key}= from --source`,
      );
    }
  }
  switch (endpoint.kind) {
    case "stdio":
      throw new UsageError(`bench cannot fill --source - (stdin); use file:<path>, kafka:// or mqtt://`);
    case "file":
      return {
        description: `file:${endpoint.path}`,
        fillOnce: async () => {
          progress(`writing ${events.length} events to file:${endpoint.path}`);
          try {
            await Deno.writeTextFile(endpoint.path, events.join("\n") + "\n");
          } catch (err) {
            throw new UsageError(
              `--source file '${endpoint.path}' cannot be written: ${(err as Error).message}`,
            );
          }
        },
        beforeRun: () => Promise.resolve(`file:${endpoint.path}`),
      };
    case "kafka": {
      const q = readQuery(flag, endpoint.params, ["client-id"]);
      const brokers = endpoint.brokers.join(",");
      const topic = `${endpoint.topic}-${tag}`;
      const clientId = q.get("client-id");
      return {
        description: `kafka://${brokers}/${topic}`,
        fillOnce: async () => {
          progress(`producing ${events.length} events to kafka://${brokers}/${topic}`);
          await produce(`kafka://${brokers}/${topic}`, events, progress);
        },
        beforeRun: (batch) => {
          const params = new URLSearchParams({ group: `edgeinfer-bench-${tag}-b${batch}`, from: "earliest" });
          if (clientId !== undefined) params.set("client-id", clientId);
          return Promise.resolve(`kafka://${brokers}/${topic}?${params}`);
        },
      };
    }
    case "mqtt-server":
      throw new UsageError(
        `bench cannot fill an mqtt-server:// source yet; use file:<path>, kafka:// or mqtt://`,
      );
    case "mqtt": {
      const q = readQuery(flag, endpoint.params, ["qos", "version", "username", "password-file"]);
      const qos = Number(oneOf(flag, "qos", q.get("qos"), ["1", "2"], "1")) as 1 | 2;
      const version = Number(oneOf(flag, "version", q.get("version"), ["4", "5"], "5")) as 4 | 5;
      if (/[+#]/.test(endpoint.topic)) {
        throw new UsageError(
          `bench publishes to --source's topic, so it must be a topic, not a filter: '${endpoint.topic}' ` +
            `has a wildcard; e.g. mqtt://127.0.0.1:1883/bench/events`,
        );
      }
      const credentials = mqttCredentials(flag, endpoint, q);
      return {
        description: maskUrl(options.source),
        beforeRun: async (batch) => {
          const clientId = `edgeinfer-bench-${tag}-b${batch}`;
          progress(
            `batch ${batch}: queueing ${events.length} events on ${endpoint.brokerUrl}/${endpoint.topic}`,
          );
          await queueMqtt(endpoint.brokerUrl, endpoint.topic, clientId, qos, version, credentials, events);
          const params = new URLSearchParams(endpoint.params);
          params.set("client-id", clientId);
          const url = new URL(options.source.replaceAll("#", "%23"));
          url.search = params.toString();
          return url.toString();
        },
      };
    }
  }
}

/** Produces `events` with edgeinfer's own sink (whatever Kafka client it uses), acks=all. */
async function produce(url: string, events: string[], progress: (line: string) => void): Promise<void> {
  // Loaded on use, like the transports themselves: a file-only benchmark needs no Kafka client.
  const { createSink } = await import("../connectors.ts");
  const health = new Health({ ...DEFAULT_RETRY, giveUpAfterMs: 30_000 }, (m) => progress(m));
  const sink = await createSink("--source", url, { health });
  let failed: Error | undefined;
  health.onFatal((err) => failed = err);
  try {
    const chunk = 1000;
    for (let i = 0; i < events.length && failed === undefined; i += chunk) {
      const refused = await sink.send(
        events.slice(i, i + chunk).map((value) => ({ key: undefined, value, headers: {} })),
      );
      if (refused && refused.length > 0) {
        throw new RuntimeError(`Kafka refused an event for ${url}: ${refused[0].reason}`);
      }
    }
  } finally {
    await sink.close();
  }
  if (failed !== undefined) throw failed;
}

/** A persistent session subscribes (so the broker queues for it), then the events are published. */
async function queueMqtt(
  brokerUrl: string,
  topic: string,
  clientId: string,
  qos: 1 | 2,
  protocolVersion: 4 | 5,
  credentials: { username?: string; password?: string },
  events: string[],
): Promise<void> {
  const { default: mqtt } = await import("mqtt");
  const login = { username: credentials.username, password: credentials.password, connectTimeout: 10_000 };
  let session, publisher;
  try {
    session = await mqtt.connectAsync(brokerUrl, {
      ...login,
      clientId,
      clean: false,
      protocolVersion,
      reconnectPeriod: 0,
      ...(protocolVersion === 5 ? { properties: { sessionExpiryInterval: 600 } } : {}),
    });
    await session.subscribeAsync(topic, { qos });
    await session.endAsync();
    publisher = await mqtt.connectAsync(brokerUrl, { ...login, protocolVersion, reconnectPeriod: 0 });
    for (let i = 0; i < events.length; i += 1000) {
      await Promise.all(events.slice(i, i + 1000).map((e) => publisher!.publishAsync(topic, e, { qos: 1 })));
    }
    await publisher.endAsync();
  } catch (err) {
    session?.end(true);
    publisher?.end(true);
    throw new RuntimeError(`queueing events on ${brokerUrl}/${topic} failed: ${(err as Error).message}`);
  }
}

/**
 * Resident memory of a process in MB, from `ps` (Deno allows reading /proc only with --allow-all);
 * null where ps is missing or the process is gone.
 */
async function rssMB(pid: number): Promise<number | null> {
  try {
    const out = await new Deno.Command("ps", { args: ["-o", "rss=", "-p", String(pid)], stderr: "null" })
      .output();
    const kb = Number(new TextDecoder().decode(out.stdout).trim());
    return out.success && kb > 0 ? kb / 1024 : null;
  } catch {
    return null;
  }
}

/** Runs `edgeinfer run` once; resolves with its figures. RuntimeError when it fails or stalls. */
async function runOnce(
  options: EndToEndOptions,
  command: string[],
  source: string,
  batch: number,
  progress: (line: string) => void,
): Promise<EndToEndResult> {
  const n = options.events.length;
  const args = [
    ...command.slice(1),
    "run",
    "--model",
    options.model,
    "--format",
    options.format,
    ...(options.features ? ["--features", options.features.join(",")] : []),
    "--threads",
    String(options.threads),
    "--source",
    source,
    "--sink",
    options.sink,
    "--batch-size",
    String(batch),
    "--max-events",
    String(n),
    "--status-every",
    "1",
  ];
  const started = performance.now();
  const child = new Deno.Command(command[0], { args, stdin: "null", stdout: "null", stderr: "piped" })
    .spawn();
  let stderr = "";
  let peak: number | null = null;
  let lastAcked = -1;
  let lastMove = performance.now();
  let stalled = false;
  const stallMs = options.stallMs ?? 60_000;
  // Peak RSS, sampled every 200 ms (one `ps` each, ~1 % of a core), and the stall watch.
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      const rss = await rssMB(child.pid);
      if (rss !== null && sampling) peak = Math.max(peak ?? 0, rss);
      if (performance.now() - lastMove > stallMs && !stalled) {
        stalled = true;
        child.kill("SIGTERM");
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  })();
  try {
    const decoder = new TextDecoder();
    for await (const chunk of child.stderr) {
      stderr += decoder.decode(chunk, { stream: true });
      const acked = [...stderr.matchAll(/status: (\d+) events acked/g)].pop()?.[1];
      if (acked !== undefined && Number(acked) !== lastAcked) {
        lastAcked = Number(acked);
        lastMove = performance.now();
        progress(`batch ${batch}: ${lastAcked} of ${n} events acknowledged`);
      }
    }
  } finally {
    sampling = false;
    await sampler;
  }
  const status = await child.status;
  const wallSeconds = (performance.now() - started) / 1000;
  const tail = stderr.trim().split("\n").slice(-5).join("\n");
  if (stalled) {
    throw new RuntimeError(
      `edgeinfer run (batch ${batch}) stopped: no event acknowledged for ${stallMs / 1000} s, ` +
        `${Math.max(0, lastAcked)} of ${n} done (did the broker drop queued events?):\n${tail}`,
    );
  }
  const summary = parseRunSummary(stderr);
  if (status.code !== 0 || summary === undefined) {
    throw new RuntimeError(`edgeinfer run (batch ${batch}) failed with exit code ${status.code}:\n${tail}`);
  }
  return {
    batchSize: batch,
    source: maskUrl(source),
    sink: maskUrl(options.sink),
    ...summary,
    wallSeconds,
    peakRssMB: peak,
  };
}

/** Fills the source and runs `edgeinfer run` once per batch size. */
export async function benchEndToEnd(
  options: EndToEndOptions,
): Promise<{ source: string; sink: string; results: EndToEndResult[] }> {
  const progress = options.onProgress ?? (() => {});
  const tag = options.tag ?? crypto.randomUUID().slice(0, 8);
  // The sink URL is checked before anything is filled (the run would refuse it only afterwards).
  const sinkEndpoint = parseEndpoint("--sink", options.sink);
  if (sinkEndpoint.kind === "mqtt") {
    throw new UsageError(`--sink cannot write to MQTT; use kafka://host:port/<topic>, file:<path> or -`);
  }
  const plan = planSource(options, tag, progress);
  const command = options.command ?? edgeinferCommand();
  if (Deno.permissions.querySync({ name: "run", command: command[0] }).state !== "granted") {
    throw new UsageError(
      `the end-to-end benchmark starts 'edgeinfer run' as a child process: it needs --allow-run ` +
        `(deno task edgeinfer and the compiled binary have it)`,
    );
  }
  await plan.fillOnce?.();
  const results: EndToEndResult[] = [];
  for (const batch of options.batchSizes) {
    const source = await plan.beforeRun(batch);
    progress(`batch ${batch}: edgeinfer run ${maskUrl(source)} → ${maskUrl(options.sink)}`);
    results.push(await runOnce(options, command, source, batch, progress));
  }
  return { source: plan.description, sink: maskUrl(options.sink), results };
}
