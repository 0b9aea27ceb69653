/** Builds one pipeline from its settings (model, codecs, source, sinks, buffer, health, stats) and runs it. */
import { DelimitedDecoder } from "../codecs/delimited.ts";
import type { Decoder } from "../codecs/decoder.ts";
import { JsonDecoder } from "../codecs/json.ts";
import { PredictionEncoder } from "../codecs/prediction.ts";
import { RuntimeError, UsageError } from "../errors.ts";
import { Model, type ModelOverrides } from "../model/model.ts";
import { locateModel } from "../model/locate.ts";
import { incompatibility, ModelSwapper } from "../model/swap.ts";
import { Shadow, ShadowInput } from "../model/shadow.ts";
import { DriftWatch } from "../model/drift.ts";
import type { DeviceFeatureState } from "../features/state.ts";
import type { Logger } from "../log.ts";
import { watchModelFile } from "../model/watch.ts";
import { KafkaModelSource } from "../model/kafka_source.ts";
import { Pipeline } from "../pipeline/pipeline.ts";
import { Stats } from "../pipeline/stats.ts";
import type { Sink } from "../pipeline/types.ts";
import { createSink, createSource } from "../connectors.ts";
import { exactlyOnce } from "../kafka/connect.ts";
import { Health } from "../pipeline/health.ts";
import { DiskBuffer } from "../buffer/buffer.ts";
import type { RunControl } from "./run_control.ts";
import type { PipelineSettings } from "./run_settings.ts";
import { Alerts } from "../alerts/alerts.ts";
import { DeviceAlerts } from "../alerts/hysteresis.ts";
import { brokerChannel, deviceChannel, isDevicePublisher } from "../alerts/channels.ts";

export async function runPipeline(name: string, s: PipelineSettings, control: RunControl): Promise<void> {
  const label = control.label(name);
  const { statusEverySeconds } = control.settings;
  // Every part of the pipeline logs through it: its lines carry the pipeline's name.
  const log = control.logger(name);
  // Outages are reported here (and shown in the status line); a fatal failure ends the run.
  const health = new Health(s.retry, log);
  const stats = new Stats();
  const metrics = control.metrics?.pipeline(name, {
    stats,
    health,
    maxInFlight: s.maxInFlight,
    mustConnect: partsToConnect(s),
  });
  // Validate every URL before connecting anywhere, so a typo fails fast.
  // The memory bound: every batch that may await the sink, plus the one being filled (also the
  // MQTT receive window), and the payload bytes of those events.
  const limits = {
    maxHeldEvents: s.batchSize * (s.maxInFlight + 1),
    maxHeldBytes: s.maxHeldBytes,
    maxPayloadBytes: s.maxPayloadBytes,
    keepOversizeBytes: s.deadLetterPayloadBytes,
    health,
    logger: log,
    deviceSubscriptions: s.alerts?.template.filter(),
  };
  const eos = s.exactlyOnce ? exactlyOnce({ source: s.source, sink: s.sink, dlq: s.dlq }, limits) : undefined;
  const source = eos?.source ?? createSource(s.source, limits);
  const overrides = {
    features: s.features,
    threshold: s.threshold,
    scoreOutput: s.scoreOutput,
    threads: s.threads,
  };
  const modelSource = s.modelSource === undefined
    ? undefined
    : new KafkaModelSource(s.modelSource, s.modelCache, log);
  let model: Model;
  try {
    model = modelSource ? await modelSource.start(s.model, overrides) : await Model.load(s.model!, overrides);
  } catch (err) {
    await modelSource?.close();
    throw err;
  }
  const modelLabel = s.model ?? s.modelSource!;
  let decoder: Decoder;
  // The model's per-device features (edgeinfer.device_features): their state lives as long as the pipeline.
  let device: DeviceFeatureState | undefined;
  if (s.format === "json") {
    if (model.features === undefined) {
      await modelSource?.close();
      await model.close();
      throw new UsageError(
        `model '${modelLabel}' names no input fields (no edgeinfer.features metadata): pass --features a,b,c ` +
          `with its ${model.width} input field names in column order, or use --format delimited`,
      );
    }
    const json = JsonDecoder.forModel(
      { features: model.features, deviceFeatures: model.deviceFeatures },
      { keyField: s.keyField, idField: s.idField, passthrough: s.passthrough.map((p) => p.field) },
      s.deviceState,
    );
    device = json.device;
    decoder = json;
  } else {
    if (model.deviceFeatures) {
      await modelSource?.close();
      await model.close();
      throw new UsageError(
        `model '${modelLabel}' computes per-device features from named event fields ` +
          `(edgeinfer.device_features): use --format json`,
      );
    }
    decoder = new DelimitedDecoder(model.width);
  }
  if (metrics) metrics.deviceState = device;
  // One device alert state for the pipeline, shared by every model's encoder (it outlives a swap).
  const deviceAlerts = s.alertHysteresis &&
    new DeviceAlerts(s.alertHysteresis.rule, s.alertHysteresis.bounds);
  if (metrics) metrics.deviceAlerts = deviceAlerts;
  // Each model has its own encoder: the model's name, version and threshold are serialised once per model.
  const encoderWith = (m: Model, alerts: DeviceAlerts | undefined) =>
    new PredictionEncoder({
      modelName: m.name,
      modelVersion: m.version,
      threshold: m.threshold,
      passthrough: s.passthrough.map((p) => p.name),
      traceHeaders: s.traceHeaders,
      deviceAlerts: alerts,
    });
  const encoderFor = (m: Model) => encoderWith(m, deviceAlerts);
  const encoder = encoderFor(model);
  if (s.alerts?.on === "anomalies" && model.threshold === undefined) {
    await modelSource?.close();
    await model.close();
    throw new UsageError(
      `--alerts-on anomalies needs a threshold, and model '${modelLabel}' has none: ` +
        `pass --threshold X, or --alerts-on all`,
    );
  }
  if (deviceAlerts && model.threshold === undefined) {
    await modelSource?.close();
    await model.close();
    throw new UsageError(
      `--alert-hysteresis counts anomalies, and model '${modelLabel}' has no threshold: pass --threshold X`,
    );
  }
  let shadow: Shadow | undefined;
  if (s.shadow) {
    try {
      shadow = await openShadow(
        s.shadow,
        model,
        { ...overrides, scoreOutput: undefined },
        // The shadow's records must not move the production devices' alerts (nor carry them).
        (m) => encoderWith(m, undefined),
        s,
        log,
      );
    } catch (err) {
      await modelSource?.close();
      await model.close();
      throw err;
    }
  }
  // Hot swap (SIGHUP, --watch-model, --model-source). Metrics: models.listen({ modelLoaded, modelReload }).
  const models = new ModelSwapper(model, overrides, encoderFor, log);
  const reloadFile = () => {
    if (s.model === undefined) {
      log.warn(`SIGHUP: no --model file to reload (models come from ${s.modelSource})`);
      return Promise.resolve();
    }
    return models.reloadFile(locateModel(s.model)).then((result) => {
      if (result === "unchanged") {
        log.info(`model file ${s.model} unchanged (same sha256): nothing to reload`);
      }
    });
  };
  const stopReloads = control.onReload(() => void reloadFile());
  const stopWatching = s.watchModel ? watchModelFile(locateModel(s.model!), reloadFile) : undefined;
  modelSource?.attach(models);
  if (metrics) models.listen(metrics);
  if (metrics) metrics.shadow = shadow;
  // The drift watch compares with the baseline of the model loaded at start (README, Drift watch).
  const drift = model.baseline && s.drift.window > 0
    ? new DriftWatch(model.baseline, s.drift.window, s.drift.threshold, log)
    : undefined;
  if (metrics) metrics.drift = drift;

  const sinks: Sink[] = [];
  const untrack = control.track({ label, health, stats });
  health.onFatal(() => control.fatal());
  let status: ReturnType<typeof setInterval> | undefined;
  try {
    const sinkOptions = { health, logger: log };
    const sink = eos?.sink ?? await createSink("--sink", s.sink, sinkOptions);
    sinks.push(sink);
    const deadLetter = eos
      ? eos.deadLetter
      : s.dlq === undefined
      ? undefined
      : await createSink("--dlq", s.dlq, sinkOptions);
    if (deadLetter) sinks.push(deadLetter);
    // Store and forward: the pipeline writes to the buffer; its forwarder writes to the sinks. Closed before
    // them: it forwards what it holds until the buffer is empty or the shutdown deadline passes.
    const buffer = s.buffer === undefined ? undefined : DiskBuffer.open({
      ...s.buffer,
      health,
      logger: log,
      targets: [sink, deadLetter],
    });
    if (metrics) metrics.buffer = buffer;
    if (buffer) {
      sinks.unshift({
        description: `buffer ${s.buffer!.dir}`,
        send: () => Promise.resolve(),
        close: () => buffer.close(control.abandon.signal),
      });
    }
    // Alerts: published as each batch goes to the sink; closed after the sinks (a pseudo-sink).
    const alerts = s.alerts && new Alerts(
      s.alerts.template,
      s.alerts.on,
      isDevicePublisher(source) ? deviceChannel(source) : brokerChannel(s.source, log),
      log,
    );
    if (alerts) {
      sinks.push({ description: "alerts", send: () => Promise.resolve(), close: () => alerts.close() });
    }
    // Exactly once: the transactions' producer is closed with the sinks (an open transaction is aborted).
    if (eos) {
      sinks.push({
        description: "Kafka transactions",
        send: () => Promise.resolve(),
        close: () => eos.transactions.close(),
      });
    }

    log.info(
      `model ${model.describe()} (${model.width} features` +
        `${model.threshold === undefined ? ", no threshold" : `, threshold ${model.threshold}`}); ` +
        `${source.description} → ${buffer ? `buffer ${s.buffer!.dir} → ` : ""}${sink.description}; ` +
        `batch ${s.batchSize}, linger ${s.lingerMs} ms` +
        (eos ? `; exactly once (a transaction every ${eos.transaction.intervalMs} ms)` : "") +
        (s.watchModel ? "; watching the model file" : "") +
        (modelSource ? `; models from ${modelSource.description}` : "") +
        (alerts ? `; ${alerts.description}` : "") +
        (deviceAlerts ? `; device alerts ${describeRule(deviceAlerts)}` : "") +
        (device
          ? `; ${device.width} per-device features (state for at most ${device.bounds.maxDevices} devices, ` +
            `idle after ${device.bounds.idleSeconds} s)`
          : "") +
        (shadow ? `; shadow ${shadow.description}` : "") +
        (drift
          ? `; drift watch on ${drift.names.length} series (window ${drift.window} events, ` +
            `PSI threshold ${drift.threshold})`
          : ""),
    );
    if (log.enabled("info")) {
      let last = { acked: 0, at: performance.now() };
      status = setInterval(() => {
        const waiting = health.describe();
        log.info(
          `status: ${stats.describe(last)}${buffer ? `; ${buffer.describe()}` : ""}${
            waiting ? `; ${waiting}` : ""
          }`,
          stats.fields(),
        );
        last = { acked: stats.acked, at: performance.now() };
      }, statusEverySeconds * 1000);
    }

    const pipeline = new Pipeline({
      source,
      sink: alerts ? alerts.wrap(buffer?.sink(0) ?? sink) : buffer?.sink(0) ?? sink,
      deadLetter: deadLetter && (buffer?.sink(1) ?? deadLetter),
      model,
      decoder,
      encoder,
      models,
      shadow,
      drift,
      batchSize: s.batchSize,
      lingerMs: s.lingerMs,
      maxInFlight: s.maxInFlight,
      maxEvents: s.maxEvents,
      maxPayloadBytes: s.maxPayloadBytes,
      deadLetterPayloadBytes: s.deadLetterPayloadBytes,
      stats,
      observer: metrics,
      log,
      health,
      transaction: eos?.transaction,
    });
    let closeError: string | undefined;
    try {
      await pipeline.run(control.shutdown.signal, control.abandon.signal);
    } finally {
      // The shadow's batches under way finish (at most a few), unless the shutdown deadline passes.
      await shadow?.close(control.settings.shutdownTimeoutMs, control.abandon.signal);
      // Sinks are flushed and closed first, then the source commits what was acknowledged (even after
      // a failure, so it is not redelivered). A close error is reported, not swallowed.
      for (const sink of sinks.splice(0)) {
        await sink.close().catch((err) => {
          closeError ??= `closing ${sink.description} failed: ${(err as Error).message}`;
          log.error(`error: ${closeError}`);
        });
      }
      await source.close();
    }
    if (closeError !== undefined) throw new RuntimeError(closeError);
    log.info(
      `done: ${stats.describe()} in ${stats.activeSeconds().toFixed(2)} s from the first event; ` +
        `peak ${stats.peakInFlight} batches / ${stats.peakHeld} events in flight ` +
        `(bound ${s.maxInFlight + 1} / ${s.batchSize * (s.maxInFlight + 1)})` +
        (buffer
          ? `; buffer: ${buffer.forwarded} forwarded` +
            (buffer.dropped > 0 ? `, ${buffer.dropped} dropped (drop-oldest)` : "") +
            (buffer.refused > 0 ? `, ${buffer.refused} refused by the sink` : "")
          : "") +
        (deviceAlerts
          ? `; device alerts: ${deviceAlerts.opened} opened, ${deviceAlerts.closed} closed, ` +
            `${deviceAlerts.openNow} open, ${deviceAlerts.size} devices tracked` +
            (deviceAlerts.evicted + deviceAlerts.expired > 0
              ? ` (${deviceAlerts.evicted} dropped by --alert-devices, ${deviceAlerts.expired} by --alert-idle)`
              : "")
          : ""),
      stats.fields(),
    );
    if (device) log.info(describeDeviceState(device));
    if (shadow) log.info(shadow.describe(), shadow.fields());
    if (drift) log.info(describeDrift(drift), driftFields(drift));
  } finally {
    await shadow?.close(control.settings.shutdownTimeoutMs, control.abandon.signal);
    if (status !== undefined) clearInterval(status);
    if (metrics) metrics.ended = true;
    untrack();
    stopReloads();
    stopWatching?.();
    await modelSource?.close();
    // Only left when the pipeline never ran (e.g. a sink failed to open).
    for (const sink of sinks) await sink.close().catch(() => {});
    models.close();
  }
}

/** The per-device state's summary line. */
function describeDeviceState(d: DeviceFeatureState): string {
  return `per-device features: ${d.size} devices in state` +
    (d.evictedCap + d.evictedIdle > 0
      ? ` (${d.evictedCap} forgotten by --device-state-max, ${d.evictedIdle} by --device-state-idle)`
      : "") +
    (d.late > 0 ? `; ${d.late} readings older than their device's newest (scored, state unchanged)` : "");
}

/** The drift summary line: PSI per series over the last window, the drifting ones named. */
function describeDrift(d: DriftWatch): string {
  if (!d.full) {
    return `drift: ${d.counts.events} events, fewer than the window of ${d.window}: no PSI (--drift-window N)`;
  }
  const drifting = d.drifting();
  return `drift: PSI over the last ${d.counts.events} events: ` +
    d.values().map(([name, value]) => `${name} ${value.toFixed(3)}`).join(", ") +
    (drifting.length > 0 ? `; over ${d.threshold}: ${drifting.join(", ")}` : `; none over ${d.threshold}`);
}

/** The summary's fields (JSON logs): psi_<series> each, rounded. */
function driftFields(d: DriftWatch): Record<string, number> {
  if (!d.full) return {};
  return Object.fromEntries(d.values().map(([name, psi]) => [`psi_${name}`, Math.round(psi * 1e4) / 1e4]));
}

/** `3 of 5 anomalous opens, 10 normal close; at most 100000 devices, idle 3600 s`. */
function describeRule(d: DeviceAlerts): string {
  const { rule, bounds } = d;
  return `(${rule.openAnomalies} of ${rule.window} anomalous opens, ${rule.closeNormals} normal close; ` +
    `at most ${bounds.maxDevices} devices, idle ${bounds.idleMs / 1000} s)`;
}

/**
 * The parts (as they name themselves to Health) that must report a success before the pipeline is ready.
 * Files and stdout need no connection; the exactly-once producer connects with its first transaction.
 */
export function partsToConnect(
  s: Pick<PipelineSettings, "source" | "sink" | "dlq" | "exactlyOnce">,
): string[] {
  const parts: string[] = [];
  if (/^mqtts?:/.test(s.source)) parts.push("MQTT source");
  if (/^kafka:/.test(s.source)) parts.push("Kafka source");
  if (!s.exactlyOnce && [s.sink, s.dlq].some((url) => url?.startsWith("kafka:"))) parts.push("Kafka sink");
  if ([s.sink, s.dlq].some((url) => url !== undefined && /^mqtts?:/.test(url))) parts.push("MQTT sink");
  return parts;
}

/**
 * --shadow-model: loaded with the production model's overrides (but its own threshold and score output),
 * checked to read the same input, with its sink (best effort: its fatal failure drops the shadow only).
 */
async function openShadow(
  settings: NonNullable<PipelineSettings["shadow"]>,
  production: Model,
  overrides: ModelOverrides,
  encoderFor: (m: Model) => PredictionEncoder,
  s: PipelineSettings,
  log: Logger,
): Promise<Shadow> {
  let candidate: Model;
  try {
    candidate = await Model.load(settings.model, { ...overrides, threshold: settings.threshold });
  } catch (err) {
    if (err instanceof UsageError) throw new UsageError(err.message.replace(/^--model /, "--shadow-model "));
    throw err;
  }
  // A shadow that reads other columns (other fields, per-device features) decodes the events itself (JSON).
  const problem = incompatibility(production, candidate);
  let ownInput: ShadowInput | undefined;
  if (problem !== undefined) {
    if (s.format !== "json" || candidate.features === undefined) {
      await candidate.close().catch(() => {});
      throw new UsageError(
        `--shadow-model '${settings.model}' (${candidate.describe()}) does not read the production model's ` +
          `input: ${problem}; a shadow with other columns needs --format json and its edgeinfer.features`,
      );
    }
    ownInput = new ShadowInput(
      JsonDecoder.forModel(
        { features: candidate.features, deviceFeatures: candidate.deviceFeatures },
        { keyField: s.keyField, idField: s.idField, passthrough: [] },
        s.deviceState,
      ),
      candidate.width,
    );
    log.info(
      `shadow ${candidate.describe()} reads other columns than ${production.describe()} (${problem}): ` +
        `it decodes each event again`,
    );
  }
  // Its own Health: a shadow sink failing for good must not end the run.
  const health = new Health({ ...s.retry, giveUpAfterMs: undefined }, log);
  let sink: Sink | undefined;
  if (settings.sink !== undefined) {
    try {
      sink = await createSink("--shadow-sink", settings.sink, { health, logger: log });
    } catch (err) {
      await candidate.close().catch(() => {});
      if (err instanceof UsageError && !err.message.startsWith("--shadow-sink")) {
        throw new UsageError(`--shadow-sink ${settings.sink}: ${err.message}`);
      }
      throw err;
    }
  }
  const shadow = new Shadow(candidate, encoderFor(candidate), sink, log, settings.maxPending, ownInput);
  health.onFatal((err) => shadow.drop(err.message));
  return shadow;
}
