import { UsageError } from "../errors.ts";
import { loadConfig, type RunSettings, settingsToArgv, takeConfigFlag } from "../config/file.ts";
import { checkPipelinesApart, PROCESS_KEYS } from "../config/pipelines.ts";
import { LOG_FLAGS, parseFlags } from "./args.ts";
import { rootLogger } from "../log.ts";
import { runAll } from "./run_control.ts";
import { runPipeline } from "./run_pipeline.ts";
import { type PipelineSettings, pipelineSettings, processSettings } from "./run_settings.ts";

export const RUN_HELP = `edgeinfer run: score a stream of events with an ONNX model, in batches

Usage: edgeinfer run --model PATH --source URL [--sink URL] [options]

Model and input
  --model PATH            ONNX model file (required without --model-source; with it, the first
                          model of a gateway that never read the topic and has no cache)
  --watch-model           reload the model when its file changes (publish with an atomic mv);
                          SIGHUP reloads it too. A new model must read the same features (same
                          input width); one that does not, or cannot be loaded, is refused and
                          the running one kept. Each batch is scored by one model, named in its
                          predictions
  --model-source URL      kafka://host:port/<topic>[?client-id=ID&tls=true&sasl=…]: models published
                          with 'edgeinfer model publish' to a compacted topic; the newest good one
                          (sha256 verified) is swapped in as it arrives
  --model-cache DIR       keep the last good model from --model-source in DIR: a start without
                          uplink scores with it
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
                          flags on the command line override it (see 'edgeinfer config --help');
                          with pipelines: NAME: {…} it runs several pipelines in this process

Where events come from and go
  --source URL            mqtt://[user@]host:port/<filter>[?qos=1&client-id=ID&share=GROUP&version=5]
                            login: username=, password-file=PATH or EDGEINFER_MQTT_PASSWORD (never argv)
                            keepalive=15 (s; a dead link is dropped within 1.5x), takeover=5 (s after a
                            share= member vanished, a survivor resumes its session; or off)
                          mqtts://host:port/<filter>: TLS (default port 8883), the same parameters and
                            ca=PATH (the broker's CA; else the system's), cert=PATH&key=PATH (mTLS)
                          mqtt-server://ADDRESS:port/<filter>: devices connect to edgeinfer itself (MQTT
                            3.1.1) and publish; QoS 1 is PUBACKed once the prediction is durable, QoS 0
                            is at most once; a publish outside the filter or QoS 2 closes the connection
                            users=PATH (NAME:BCRYPT-HASH lines, htpasswd -nbB) or allow-anonymous=true
                            acl=cars/{identity}/# (a device publishes only under its own name)
                          mqtts-server://ADDRESS:port/<filter>: the same over TLS (default port 8883),
                            cert=PATH&key=PATH (the server's), ca=PATH (devices need a certificate of
                            this CA; its CN is their identity)
                          kafka://host:port[,host:port]/<topic>[?group=edgeinfer&from=earliest]
                            request-timeout-ms=15000 (an unanswered request drops the connection; sink too)
                            session-timeout-ms=10000 (a lost member's partitions move after this)
                            tls=true with ca=, cert=, key= as for mqtts:// (sink too)
                            sasl=plain|scram-sha-256|scram-sha-512&username=NAME (sink too), the password
                              from password-file=PATH or EDGEINFER_KAFKA_PASSWORD (never argv)
                          file:<path> (one event per line) or - (stdin); these end the run at EOF
  --sink URL              kafka://host:port/<topic>[?compression=zstd&max-record-bytes=1000000]
                            compression: none, gzip, snappy, lz4 or zstd (the default)
                          mqtt://host:port/<topic>, e.g. .../cars/{key}/predictions ({key}: the record's
                            key): QoS 1, durable once the broker PUBACKs; a key holding + or # or empty
                            is refused (dead-lettered); client-id=, version=4|5, keepalive=, login and
                            mqtts:// TLS parameters as for --source
                          file:<path> (fsynced per batch) or - (stdout, the default)
  --dlq URL               dead-letter sink for events that cannot be scored (same forms as --sink);
                          without it they are counted and each kind of error is logged once
  --alerts TOPIC          publish predictions back to the devices, e.g. 'cars/{key}/alerts' ({key}: the
                          record's key, a whole level): with mqtt-server:// to the devices subscribed
                          on edgeinfer (they may subscribe within TOPIC and their acl= rights), with
                          mqtt:// to the source's broker. Best effort: QoS 0, sent once the batch is
                          scored, before it is durable; never holds or slows acknowledgements
  --alerts-on WHICH       anomalies (the default: predictions over the threshold; with
                          --alert-hysteresis: while the device's alert is open, and its closing) or all
  --alert-hysteresis K/N,M
                          a device alert per key that opens when K of its last N readings are anomalous
                          and closes after M normal ones in a row (N <= 32), e.g. 3/5,10; each record
                          gains "alert":{"open":…,"since":…,"changed":…}. In memory: empty after a restart
  --alert-devices N       devices whose alert state is kept, the least recently seen dropped beyond
                          (default 100000; a dropped device starts again closed)
  --alert-idle D          a device unseen for D starts again closed (default 1h)

Shadow model (README "Shadow model")
  --shadow-model PATH     a candidate model that scores every batch beside the production model, on a
                          copy of its rows; it must read the same features. Never delays production: it
                          skips batches when behind (counted) and is dropped, with one line, on failure.
                          Agreement (anomaly agreement, disagreements, score correlation) goes to the
                          summary and the metrics
  --shadow-threshold X    the shadow's anomaly threshold (default: its edgeinfer.threshold metadata)
  --shadow-sink URL       where the shadow's predictions go (same forms as --sink; best effort: a
                          failing shadow sink drops the shadow, never the pipeline); default: none
  --shadow-max-pending N  shadow batches being scored or written at which the next ones are skipped
                          (counted), so that a slow shadow never holds memory or production (default 2)

Per-device features (README "Per-device features"; when the model has edgeinfer.device_features)
  --device-state-max N    devices whose state is kept at most; beyond it the least recently seen is
                          forgotten (~0.4 KB each with the car model; default 100000)
  --device-state-idle S   a device silent for S seconds is forgotten; it starts afresh, as after a
                          restart (default 3600)

Drift watch (README "Drift watch"; on when the model has edgeinfer.baseline metadata)
  --drift-window N        events whose feature and score bins are compared with the model's baseline
                          (PSI per feature and for the score, a metric each); 0 turns the watch off
                          (default 20000)
  --drift-threshold X     PSI above which a feature (or the score) is logged as drifted, once, until
                          it falls below half of it (default 0.2)

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

Output (stderr: one logger for every part; see README "Logs")
  --quiet                 errors only: no status line or summary (= --log-level error)
  --status-every SECONDS  status line interval (default 5)
  --http HOST:PORT        serve /metrics (Prometheus), /healthz and /readyz there, e.g.
                          127.0.0.1:9464 (default: off; process-wide with pipelines:)
  --log-format text|json  text: 'edgeinfer: [pipeline] message' (the default); json: one object a line
                          with ts, level, pipeline (with pipelines:), msg
  --log-level LEVEL       error, warn (outages, dropped events), info (status lines, summary: the
                          default) or debug (connections, batch summaries once a second); wins over --quiet
  --log-timestamps        text lines start with an ISO 8601 UTC timestamp (json lines always have ts)

Certificates are always verified. A wrong CA, a refused certificate or login, or a principal without
permission ends the run at once (exit 1) with one line naming the parameter to fix.

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
  "watch-model": { type: "boolean", default: false },
  "model-source": { type: "string" },
  "model-cache": { type: "string" },
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
  http: { type: "string" },
  alerts: { type: "string" },
  "alerts-on": { type: "string" },
  "alert-hysteresis": { type: "string" },
  "alert-devices": { type: "string" },
  "alert-idle": { type: "string" },
  "shadow-model": { type: "string" },
  "shadow-threshold": { type: "string" },
  "shadow-sink": { type: "string" },
  "shadow-max-pending": { type: "string" },
  "drift-window": { type: "string" },
  "drift-threshold": { type: "string" },
  "device-state-max": { type: "string" },
  "device-state-idle": { type: "string" },
  ...LOG_FLAGS,
} as const;

export async function runCommand(argv: string[]): Promise<void> {
  const { path, rest } = takeConfigFlag(argv);
  const config = path === undefined ? undefined : loadConfig(path, RUN_FLAGS);
  if (path !== undefined && config?.pipelines !== undefined) {
    return await runSeveral(path, config.settings, config.pipelines, rest);
  }
  // The file's keys become flags placed first, so that the command line's override them.
  const { values } = parseFlags("run", [...settingsToArgv(config?.settings ?? {}), ...rest], RUN_FLAGS);
  const processWide = processSettings(values);
  rootLogger.configure(processWide.log); // first, so that even a mistake below is logged as asked
  const settings = pipelineSettings(values);
  await runAll(processWide, ["main"], (_, control) => runPipeline("main", settings, control));
}

/**
 * A config file with `pipelines:`: every pipeline runs in this process. The command line may only add
 * process-wide flags: any other would be ambiguous (which pipeline?), so it is refused.
 */
async function runSeveral(
  path: string,
  top: RunSettings,
  pipelines: Record<string, RunSettings>,
  argv: string[],
): Promise<void> {
  const { values: given } = parseFlags("run", argv, withoutDefaults(RUN_FLAGS));
  const perPipeline = Object.keys(given).find((flag) => !PROCESS_KEYS.includes(flag));
  if (perPipeline !== undefined) {
    throw new UsageError(
      `--${perPipeline} cannot be given on the command line with ${path}'s pipelines: set it in the file ` +
        `(at the top level for every pipeline, or under pipelines.<name>); only ` +
        `${PROCESS_KEYS.map((k) => `--${k}`).join(", ")} may be`,
    );
  }
  const processWide = Object.fromEntries(Object.entries(top).filter(([key]) => PROCESS_KEYS.includes(key)));
  const { values } = parseFlags("run", [...settingsToArgv(processWide), ...argv], RUN_FLAGS);
  const processWideSettings = processSettings(values);
  rootLogger.configure(processWideSettings.log);
  const settings = checkedPipelines(path, pipelines);
  await runAll(
    processWideSettings,
    [...settings.keys()],
    (name, control) => runPipeline(name, settings.get(name)!, control),
  );
}

/**
 * Each pipeline of a config file checked as `run` checks one, before any connects anywhere; a mistake names
 * `pipelines.<name>`. So are conflicts between them (one --buffer DIR, one MQTT session, …).
 */
export function checkedPipelines(
  path: string,
  pipelines: Record<string, RunSettings>,
): Map<string, PipelineSettings> {
  const checked = new Map<string, PipelineSettings>();
  for (const [name, own] of Object.entries(pipelines)) {
    try {
      checked.set(name, pipelineSettings(parseFlags("run", settingsToArgv(own), RUN_FLAGS).values));
    } catch (err) {
      if (err instanceof UsageError) throw new UsageError(`${path}: pipelines.${name}: ${err.message}`);
      throw err;
    }
  }
  checkPipelinesApart(path, pipelines);
  return checked;
}

/** The flags without their defaults, so that parsing tells which ones were given. */
function withoutDefaults<T extends Record<string, { type: "string" | "boolean" }>>(flags: T) {
  return Object.fromEntries(Object.entries(flags).map(([name, { type }]) => [name, { type }])) as {
    [K in keyof T]: { type: T[K]["type"] };
  };
}
