import { DelimitedDecoder } from "../codecs/delimited.ts";
import type { Decoder } from "../codecs/decoder.ts";
import { JsonDecoder } from "../codecs/json.ts";
import { PredictionEncoder, RECORD_FIELDS } from "../codecs/prediction.ts";
import { RuntimeError, UsageError } from "../errors.ts";
import { logLine } from "../log.ts";
import { Model } from "../model/model.ts";
import { Pipeline } from "../pipeline/pipeline.ts";
import { Stats } from "../pipeline/stats.ts";
import type { Sink } from "../pipeline/types.ts";
import { createSink, createSource } from "../connectors.ts";
import { exactlyOnce } from "../kafka/connect.ts";
import { DEFAULT_RETRY, Health, type RetryPolicy } from "../pipeline/health.ts";
import { durationFlag, intFlag, listFlag, numberFlag, parseFlags } from "./args.ts";
import { onShutdownSignal } from "./signals.ts";
import { expandConfig } from "../config/file.ts";
import { DEFAULT_BUFFER_MAX_BYTES, DiskBuffer, WHEN_FULL, type WhenFull } from "../buffer/buffer.ts";

export const RUN_HELP = `edgeinfer run: score a stream of events with an ONNX model, in batches

Usage: edgeinfer run --model PATH --source URL [--sink URL] [options]

Model and input
  --model PATH            ONNX model file (required)
  --format json|delimited payload format (default json)
                            json:      a JSON object; features are read by field name
                            delimited: <id>,<v1>#<v2>#... (the KSQL UDF stream); values in column order
  --features a,b,c        input field names in tensor column order (default: the model's
                          edgeinfer.features metadata; json only)
  --key-field NAME        JSON field that keys the output (default: Kafka key or MQTT topic)
  --id-field NAME         JSON field copied to the output's "id" (default id)
  --passthrough a,b:c     JSON fields copied into each output record (b renamed to c)
  --threshold X           anomaly threshold on the score (default: edgeinfer.threshold metadata)
  --score-output NAME     model output used as score (default: edgeinfer.score metadata, or the
                          model's only output)

Configuration
  --config FILE           settings from a YAML file whose keys are these flags' names (e.g.
                          batch-size: 256); \${VAR} and \${VAR:-default} come from the environment;
                          flags on the command line override it (see 'edgeinfer config --help')

Where events come from and go
  --source URL            mqtt://[user@]host:port/<filter>[?qos=1&client-id=ID&share=GROUP&version=5]
                            login: username=, password-file=PATH or EDGEINFER_MQTT_PASSWORD (never argv)
                            keepalive=15 (s; a dead link is dropped within 1.5x), takeover=5 (s after a
                            share= member vanished, a survivor resumes its session; or off)
                          kafka://host:port[,host:port]/<topic>[?group=edgeinfer&from=earliest]
                            request-timeout-ms=15000 (an unanswered request drops the connection; sink too)
                            session-timeout-ms=10000 (a lost member's partitions move after this)
                          file:<path> (one event per line) or - (stdin); these end the run at EOF
  --sink URL              kafka://host:port/<topic>[?compression=zstd&max-record-bytes=1000000]
                            compression: none, gzip, snappy, lz4 or zstd (the default)
                          file:<path> (fsynced per batch) or - (stdout, the default)
  --dlq URL               dead-letter sink for events that cannot be scored (same forms as --sink);
                          without it they are counted and each kind of error is logged once

Batching and delivery
  --batch-size N          flush a batch at N events (default 256)
  --linger-ms N           ... or N ms after its first event, whichever comes first (default 5)
  --max-in-flight N       batches awaiting a durable write before the source is paused (default 4)
  --max-events N          stop cleanly after N events are processed and acknowledged
  --max-payload-bytes N   larger payloads go to the DLQ (default 1048576); only their first
                          --dlq-payload-bytes are kept in memory
  --max-held-bytes N      payload bytes held in the process (received, not yet acknowledged) at
                          which the source stops reading (default 67108864 = 64 MiB)
  --dlq-payload-bytes N   payload bytes embedded in a dead-letter record; the original's size and
                          sha256 are always recorded (default 65536)
  --threads N             ONNX Runtime intra-op threads (default 1)
  --trace-headers on|off  the Kafka headers edgeinfer-source and edgeinfer-model on each prediction
                          (default on; off gains ~20 % Kafka → Kafka throughput)
  --exactly-once          Kafka → Kafka only: each batch's predictions, dead letters and source
                          offsets are committed in one Kafka transaction (every 100 ms), so a
                          read_committed consumer sees each event once, through crashes and restarts.
                          The transactional id (sink URL transactional-id=, default
                          edgeinfer-<group>-<source topic>-<hostname>) must be stable across restarts
                          and differ between instances

Store and forward
  --buffer DIR            predictions and dead letters go to a durable buffer in DIR first (SQLite,
                          fsynced per batch); events are acknowledged once buffered, and a forwarder
                          sends the buffer to --sink/--dlq in order: rides out long uplink outages
                          and restarts (one process per DIR)
  --buffer-max-bytes N    records buffered at most (default 1073741824 = 1 GiB; the disk file stays
                          near its peak size)
  --buffer-when-full P    block (stop acknowledging: backpressure, the default) or drop-oldest
                          (counted and logged)

Outages and shutdown
  --retry-max-backoff D   a retriable failure (broker down, restarting, timeout) is retried for
                          ever, backing off up to D between attempts (default 5s; 500ms, 10s, 2m)
  --give-up-after D       end the run (exit 1) when one failure lasts longer than D (default: never)
  --shutdown-timeout D    after SIGINT/SIGTERM, wait at most D for in-flight batches to become
                          durable; what is not is left unacknowledged and redelivered (default 10s)

Output
  --quiet                 no status line or summary on stderr
  --status-every SECONDS  status line interval (default 5)

Each event is acknowledged (Kafka offset committed, MQTT PUBACK sent) only after its prediction or
dead-letter record is durable. SIGINT/SIGTERM: stop reading, flush, commit, disconnect, exit 0.

Examples
  edgeinfer run --model models/car-anomaly.onnx \\
    --source 'mqtt://127.0.0.1:1883/cars/+/sensors?qos=1' --key-field car \\
    --sink kafka://127.0.0.1:9092/car-predictions --dlq kafka://127.0.0.1:9092/car-dead-letters
  edgeinfer run --model ecg-autoencoder.onnx --format delimited \\
    --source file:ecg_discord_test.msgs --sink -
`;

/** `run`'s flags; a config file's keys are these names (src/config/file.ts). */
export const RUN_FLAGS = {
  model: { type: "string" },
  source: { type: "string" },
  sink: { type: "string", default: "-" },
  dlq: { type: "string" },
  format: { type: "string", default: "json" },
  features: { type: "string" },
  "key-field": { type: "string" },
  "id-field": { type: "string", default: "id" },
  passthrough: { type: "string" },
  threshold: { type: "string" },
  "score-output": { type: "string" },
  "batch-size": { type: "string" },
  "linger-ms": { type: "string" },
  "max-in-flight": { type: "string" },
  "max-events": { type: "string" },
  "max-payload-bytes": { type: "string" },
  "max-held-bytes": { type: "string" },
  "dlq-payload-bytes": { type: "string" },
  "retry-max-backoff": { type: "string" },
  "give-up-after": { type: "string" },
  "shutdown-timeout": { type: "string" },
  threads: { type: "string" },
  quiet: { type: "boolean", default: false },
  "exactly-once": { type: "boolean", default: false },
  "trace-headers": { type: "string", default: "on" },
  "status-every": { type: "string" },
  buffer: { type: "string" },
  "buffer-max-bytes": { type: "string" },
  "buffer-when-full": { type: "string", default: "block" },
} as const;

export async function runCommand(argv: string[]): Promise<void> {
  const { values: f } = parseFlags("run", expandConfig(argv, RUN_FLAGS), RUN_FLAGS);

  if (f.model === undefined) throw new UsageError("run needs --model PATH (see 'edgeinfer run --help')");
  if (f.source === undefined) throw new UsageError("run needs --source URL (see 'edgeinfer run --help')");
  if (f.format !== "json" && f.format !== "delimited") {
    throw new UsageError(`--format must be json or delimited, got '${f.format}'`);
  }
  const batchSize = intFlag("batch-size", f["batch-size"], 256, 1);
  const lingerMs = intFlag("linger-ms", f["linger-ms"], 5, 0);
  const maxInFlight = intFlag("max-in-flight", f["max-in-flight"], 4, 1);
  const maxEvents = f["max-events"] === undefined ? undefined : intFlag("max-events", f["max-events"], 0, 1);
  const maxPayloadBytes = intFlag("max-payload-bytes", f["max-payload-bytes"], 1 << 20, 1);
  const maxHeldBytes = intFlag("max-held-bytes", f["max-held-bytes"], 64 << 20, 1);
  const deadLetterPayloadBytes = intFlag("dlq-payload-bytes", f["dlq-payload-bytes"], 64 << 10, 0);
  if (f["trace-headers"] !== "on" && f["trace-headers"] !== "off") {
    throw new UsageError(`--trace-headers must be on or off, got '${f["trace-headers"]}'`);
  }
  const retry: RetryPolicy = {
    initialBackoffMs: DEFAULT_RETRY.initialBackoffMs,
    maxBackoffMs: durationFlag("retry-max-backoff", f["retry-max-backoff"], DEFAULT_RETRY.maxBackoffMs),
    giveUpAfterMs: durationFlag("give-up-after", f["give-up-after"]),
  };
  if (retry.maxBackoffMs < 1) throw new UsageError(`--retry-max-backoff must be at least 1ms`);
  retry.initialBackoffMs = Math.min(retry.initialBackoffMs, retry.maxBackoffMs);
  const shutdownTimeoutMs = durationFlag("shutdown-timeout", f["shutdown-timeout"], 10_000);
  const threads = intFlag("threads", f.threads, 1, 1);
  const bufferMaxBytes = intFlag("buffer-max-bytes", f["buffer-max-bytes"], DEFAULT_BUFFER_MAX_BYTES, 1);
  const whenFull = f["buffer-when-full"] as WhenFull;
  if (!WHEN_FULL.includes(whenFull)) {
    throw new UsageError(`--buffer-when-full must be block or drop-oldest, got '${f["buffer-when-full"]}'`);
  }
  if (f.buffer === undefined && (f["buffer-max-bytes"] !== undefined || f["buffer-when-full"] !== "block")) {
    throw new UsageError("--buffer-max-bytes and --buffer-when-full need --buffer DIR");
  }
  if (f.buffer !== undefined && f["exactly-once"]) {
    throw new UsageError(
      "--buffer cannot be combined with --exactly-once: a Kafka transaction commits the input offsets with " +
        "the records in Kafka, which a local buffer would break; drop one of them",
    );
  }
  const statusEvery = numberFlag("status-every", f["status-every"]) ?? 5;
  if (statusEvery <= 0) {
    throw new UsageError(`--status-every must be > 0 seconds, got '${f["status-every"]}'`);
  }
  // FIELD or FIELD:NAME (a rename, e.g. ts:event_ts, since the record has a ts of its own).
  const passthrough = (listFlag(f.passthrough) ?? []).map((item) => {
    const [field, name = field] = item.split(":");
    if (RECORD_FIELDS.includes(name)) {
      throw new UsageError(
        `--passthrough field '${name}' clashes with the output record's own '${name}'; ` +
          `rename it, e.g. ${field}:${field}_in`,
      );
    }
    return { field, name };
  });
  if (f.format === "delimited") {
    for (const flag of ["features", "key-field", "passthrough"] as const) {
      if (f[flag] !== undefined) throw new UsageError(`--${flag} applies to --format json only`);
    }
  }

  const log = f.quiet ? () => {} : logLine;
  // Outages are reported here (and shown in the status line); a fatal failure ends the run.
  const health = new Health(retry, logLine);
  // Validate every URL before connecting anywhere, so a typo fails fast.
  // The memory bound: every batch that may await the sink, plus the one being filled (also the
  // MQTT receive window), and the payload bytes of those events.
  const limits = {
    maxHeldEvents: batchSize * (maxInFlight + 1),
    maxHeldBytes,
    maxPayloadBytes,
    keepOversizeBytes: deadLetterPayloadBytes,
    health,
  };
  const eos = f["exactly-once"]
    ? exactlyOnce({ source: f.source, sink: f.sink!, dlq: f.dlq }, limits)
    : undefined;
  const source = eos?.source ?? createSource(f.source, limits);
  const model = await Model.load(f.model, {
    features: listFlag(f.features),
    threshold: numberFlag("threshold", f.threshold),
    scoreOutput: f["score-output"],
    threads,
  });
  let decoder: Decoder;
  if (f.format === "json") {
    if (model.features === undefined) {
      throw new UsageError(
        `model '${f.model}' names no input fields (no edgeinfer.features metadata): pass --features a,b,c ` +
          `with its ${model.width} input field names in column order, or use --format delimited`,
      );
    }
    decoder = new JsonDecoder({
      features: model.features,
      keyField: f["key-field"],
      idField: f["id-field"]!,
      passthrough: passthrough.map((p) => p.field),
    });
  } else {
    decoder = new DelimitedDecoder(model.width);
  }
  const encoder = new PredictionEncoder({
    modelName: model.name,
    modelVersion: model.version,
    threshold: model.threshold,
    passthrough: passthrough.map((p) => p.name),
    traceHeaders: f["trace-headers"] === "on",
  });

  const sinks: Sink[] = [];
  const stats = new Stats();
  const shutdown = new AbortController();
  // Aborted when the shutdown deadline passes: in-flight batches are then given up (unacknowledged).
  const abandon = new AbortController();
  let deadline: ReturnType<typeof setTimeout> | undefined;
  /** After the deadline, cleanup (commit, disconnect) gets a few seconds more, then the process exits. */
  const armDeadline = (what: string) => {
    if (deadline !== undefined) return;
    deadline = setTimeout(() => {
      const waiting = health.describe();
      logLine(
        `${what} did not finish within --shutdown-timeout ${shutdownTimeoutMs / 1000} s` +
          `${waiting ? ` (${waiting})` : ""}: ${stats.events - stats.acked} events left unacknowledged ` +
          `(the source redelivers them)`,
      );
      abandon.abort();
      setTimeout(() => {
        logLine("exiting: disconnecting did not finish either");
        Deno.exit(health.fatalError ? 1 : 0);
      }, 5000);
    }, shutdownTimeoutMs);
  };
  const stopSignals = onShutdownSignal(() => {
    log("stopping: flushing in-flight batches and committing (signal again to exit at once)");
    armDeadline("shutdown");
    shutdown.abort();
  });
  health.onFatal(() => armDeadline("stopping after a fatal failure"));
  let status: ReturnType<typeof setInterval> | undefined;
  try {
    const sinkOptions = { health };
    const sink = eos?.sink ?? await createSink("--sink", f.sink!, sinkOptions);
    sinks.push(sink);
    const deadLetter = eos
      ? eos.deadLetter
      : f.dlq === undefined
      ? undefined
      : await createSink("--dlq", f.dlq, sinkOptions);
    if (deadLetter) sinks.push(deadLetter);
    // Store and forward: the pipeline writes to the buffer; its forwarder writes to the sinks. Closed before
    // them: it forwards what it holds until the buffer is empty or the shutdown deadline passes.
    const buffer = f.buffer === undefined ? undefined : DiskBuffer.open({
      dir: f.buffer,
      maxBytes: bufferMaxBytes,
      whenFull,
      health,
      targets: [sink, deadLetter],
    });
    if (buffer) {
      sinks.unshift({
        description: `buffer ${f.buffer}`,
        send: () => Promise.resolve(),
        close: () => buffer.close(abandon.signal),
      });
    }
    // Exactly once: the transactions' producer is closed with the sinks (an open transaction is aborted).
    if (eos) {
      sinks.push({
        description: "Kafka transactions",
        send: () => Promise.resolve(),
        close: () => eos.transactions.close(),
      });
    }

    log(
      `model ${model.name}${model.version ? ` v${model.version}` : ""} (${model.width} features` +
        `${model.threshold === undefined ? ", no threshold" : `, threshold ${model.threshold}`}); ` +
        `${source.description} → ${buffer ? `buffer ${f.buffer} → ` : ""}${sink.description}; ` +
        `batch ${batchSize}, linger ${lingerMs} ms` +
        (eos ? `; exactly once (a transaction every ${eos.transaction.intervalMs} ms)` : ""),
    );
    if (!f.quiet) {
      let last = { acked: 0, at: performance.now() };
      status = setInterval(() => {
        const waiting = health.describe();
        logLine(
          `status: ${stats.describe(last)}${buffer ? `; ${buffer.describe()}` : ""}${
            waiting ? `; ${waiting}` : ""
          }`,
        );
        last = { acked: stats.acked, at: performance.now() };
      }, statusEvery * 1000);
    }

    const pipeline = new Pipeline({
      source,
      sink: buffer?.sink(0) ?? sink,
      deadLetter: deadLetter && (buffer?.sink(1) ?? deadLetter),
      model,
      decoder,
      encoder,
      batchSize,
      lingerMs,
      maxInFlight,
      maxEvents,
      maxPayloadBytes,
      deadLetterPayloadBytes,
      stats,
      log,
      health,
      transaction: eos?.transaction,
    });
    let closeError: string | undefined;
    try {
      await pipeline.run(shutdown.signal, abandon.signal);
    } finally {
      // Sinks are flushed and closed first, then the source commits what was acknowledged (even after
      // a failure, so it is not redelivered). A close error is reported, not swallowed.
      for (const s of sinks.splice(0)) {
        await s.close().catch((err) => {
          closeError ??= `closing ${s.description} failed: ${(err as Error).message}`;
          logLine(`error: ${closeError}`);
        });
      }
      await source.close();
    }
    if (closeError !== undefined) throw new RuntimeError(closeError);
    log(
      `done: ${stats.describe()} in ${stats.activeSeconds().toFixed(2)} s from the first event; ` +
        `peak ${stats.peakInFlight} batches / ${stats.peakHeld} events in flight ` +
        `(bound ${maxInFlight + 1} / ${batchSize * (maxInFlight + 1)})` +
        (buffer
          ? `; buffer: ${buffer.forwarded} forwarded` +
            (buffer.dropped > 0 ? `, ${buffer.dropped} dropped (drop-oldest)` : "") +
            (buffer.refused > 0 ? `, ${buffer.refused} refused by the sink` : "")
          : ""),
    );
  } finally {
    if (status !== undefined) clearInterval(status);
    stopSignals();
    // Only left when the pipeline never ran (e.g. a sink failed to open).
    for (const sink of sinks) await sink.close().catch(() => {});
    clearTimeout(deadline);
    await model.close();
  }
}
