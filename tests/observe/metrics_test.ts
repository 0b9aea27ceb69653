import assert from "node:assert/strict";
import { Buckets, Metrics } from "../../src/observe/metrics.ts";
import { Health } from "../../src/pipeline/health.ts";
import { Stats } from "../../src/pipeline/stats.ts";
import { partsToConnect } from "../../src/cli/run_pipeline.ts";
import { DeviceAlerts } from "../../src/alerts/hysteresis.ts";
import { ShadowAgreement } from "../../src/model/shadow.ts";

const README = new URL("../../README.md", import.meta.url);

function setUp(mustConnect: string[] = ["MQTT source", "Kafka sink"]) {
  const metrics = new Metrics();
  const stats = new Stats();
  const health = new Health();
  const pipeline = metrics.pipeline("main", { stats, health, maxInFlight: 4, mustConnect });
  return { metrics, stats, health, pipeline };
}

/** The value of one sample line, e.g. `edgeinfer_acked_total{pipeline="main"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(series + " "));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

Deno.test("Buckets: a value on a bound falls in that bucket (le), above the last in +Inf", () => {
  const h = new Buckets([1, 10]);
  for (const v of [0.5, 1, 1.5, 10, 11]) h.observe(v);
  assert.deepEqual([...h.counts], [2, 2, 1]);
  assert.deepEqual(h.count, 5);
  assert.deepEqual(h.sum, 24);
});

Deno.test("metrics: counters come from Stats at scrape time, dead letters by reason, histograms cumulative", async () => {
  const { metrics, stats, pipeline } = setUp();
  stats.events = 100;
  stats.acked = 98;
  stats.predictions = 90;
  stats.predictionsRefused = 2;
  stats.anomalies = 7;
  stats.deadLetterReasons.undecodable = 6;
  stats.deadLetterReasons.sink_refused = 2;
  stats.inFlight = 3;
  stats.sourcePaused = true;
  pipeline.batchSize(64);
  pipeline.batchSize(36);
  pipeline.eventLatencySeconds(0.004);
  pipeline.modelLoaded({ name: "car", version: "2", sha256: "ab12" });
  pipeline.modelReload("refused");
  const text = await metrics.text();
  const m = (series: string) => sample(text, series);
  assert.deepEqual(m(`edgeinfer_events_received_total{pipeline="main"}`), 100);
  assert.deepEqual(m(`edgeinfer_events_acked_total{pipeline="main"}`), 98);
  assert.deepEqual(m(`edgeinfer_predictions_total{pipeline="main"}`), 92);
  assert.deepEqual(m(`edgeinfer_anomalies_total{pipeline="main"}`), 7);
  assert.deepEqual(m(`edgeinfer_dead_letters_total{pipeline="main",reason="undecodable"}`), 6);
  assert.deepEqual(m(`edgeinfer_dead_letters_total{pipeline="main",reason="sink_refused"}`), 2);
  assert.deepEqual(m(`edgeinfer_dead_letters_total{pipeline="main",reason="invalid_utf8"}`), 0);
  assert.deepEqual(m(`edgeinfer_batches_in_flight{pipeline="main"}`), 3);
  assert.deepEqual(m(`edgeinfer_batches_in_flight_limit{pipeline="main"}`), 4);
  assert.deepEqual(m(`edgeinfer_source_paused{pipeline="main"}`), 1);
  assert.deepEqual(m(`edgeinfer_batch_size_bucket{pipeline="main",le="32"}`), 0);
  assert.deepEqual(m(`edgeinfer_batch_size_bucket{pipeline="main",le="64"}`), 2);
  assert.deepEqual(m(`edgeinfer_batch_size_bucket{pipeline="main",le="+Inf"}`), 2);
  assert.deepEqual(m(`edgeinfer_batch_size_sum{pipeline="main"}`), 100);
  assert.deepEqual(m(`edgeinfer_batch_size_count{pipeline="main"}`), 2);
  assert.deepEqual(m(`edgeinfer_event_latency_seconds_bucket{pipeline="main",le="0.005"}`), 1);
  assert.deepEqual(m(`edgeinfer_model_info{pipeline="main",model="car",version="2",sha256="ab12"}`), 1);
  assert.deepEqual(m(`edgeinfer_model_reloads_total{pipeline="main",result="refused"}`), 1);
  assert.deepEqual(m(`edgeinfer_model_reloads_total{pipeline="main",result="ok"}`), 0);
  // Without --buffer, no buffer series; the process's own metrics are there.
  assert.deepEqual(text.includes(`edgeinfer_buffer_bytes{`), false);
  assert.ok(m("process_resident_memory_bytes")! > 0);
  assert.ok(text.includes("process_cpu_seconds_total "));
  // Later scrapes see later values (collect() resets, then reads again).
  stats.acked = 100;
  assert.deepEqual(sample(await metrics.text(), `edgeinfer_events_acked_total{pipeline="main"}`), 100);
});

Deno.test("metrics: buffer gauges read the buffer's state, its oldest record's age in seconds", async () => {
  const { metrics, pipeline } = setUp();
  pipeline.buffer = { bytes: 2048, records: 7, forwarded: 30, dropped: 1, oldestAt: () => Date.now() - 5000 };
  const text = await metrics.text();
  assert.deepEqual(sample(text, `edgeinfer_buffer_bytes{pipeline="main"}`), 2048);
  assert.deepEqual(sample(text, `edgeinfer_buffer_records{pipeline="main"}`), 7);
  assert.deepEqual(sample(text, `edgeinfer_buffer_forwarded_total{pipeline="main"}`), 30);
  assert.deepEqual(sample(text, `edgeinfer_buffer_dropped_total{pipeline="main"}`), 1);
  const age = sample(text, `edgeinfer_buffer_oldest_age_seconds{pipeline="main"}`)!;
  assert.ok(age >= 5 && age < 6, `age ${age}`);
});

Deno.test("readiness: needs the model and a success from each part; a retrying part names itself", async () => {
  const { metrics, health, pipeline } = setUp();
  assert.deepEqual(metrics.readiness().ready, false);
  assert.deepEqual(metrics.readiness().reasons, [
    "pipeline main: model not loaded yet",
    "pipeline main: MQTT source not connected yet",
    "pipeline main: Kafka sink not connected yet",
  ]);
  pipeline.modelLoaded({ name: "car", version: "1", sha256: "00" });
  health.recovered("MQTT source 127.0.0.1:1883");
  assert.deepEqual(metrics.readiness().reasons, ["pipeline main: Kafka sink not connected yet"]);
  health.recovered("Kafka sink 127.0.0.1:9092");
  assert.deepEqual(metrics.readiness(), { ready: true, reasons: [] });

  health.waiting("Kafka sink 127.0.0.1:9092", "connection refused");
  const { ready, reasons } = metrics.readiness();
  assert.deepEqual(ready, false);
  assert.deepEqual(reasons.length, 1);
  assert.match(
    reasons[0],
    /^pipeline main: waiting for Kafka sink 127\.0\.0\.1:9092 since .*: connection refused$/,
  );
  const text = await metrics.text();
  assert.deepEqual(sample(text, `edgeinfer_part_up{pipeline="main",part="Kafka sink 127.0.0.1:9092"}`), 0);
  assert.deepEqual(
    sample(text, `edgeinfer_part_retrying{pipeline="main",part="Kafka sink 127.0.0.1:9092"}`),
    1,
  );
  assert.deepEqual(sample(text, `edgeinfer_part_up{pipeline="main",part="MQTT source 127.0.0.1:1883"}`), 1);
  assert.deepEqual(
    sample(text, `edgeinfer_retries_total{pipeline="main",part="Kafka sink 127.0.0.1:9092"}`),
    1,
  );
  assert.deepEqual(sample(text, `edgeinfer_ready{pipeline="main"}`), 0);

  health.recovered("Kafka sink 127.0.0.1:9092");
  assert.deepEqual(metrics.readiness().ready, true);
  health.fatal(new Error("Kafka sink: not authorised"));
  assert.deepEqual(metrics.readiness().reasons, ["pipeline main: failed: Kafka sink: not authorised"]);
});

Deno.test("readiness: a part never heard from that is retrying says why, not 'not connected'", () => {
  const { metrics, health, pipeline } = setUp(["Kafka source"]);
  pipeline.modelLoaded({ name: "car", version: "1", sha256: "00" });
  health.waiting("Kafka source 127.0.0.1:9092", "connection refused");
  const { reasons } = metrics.readiness();
  assert.deepEqual(reasons.length, 1);
  assert.match(reasons[0], /waiting for Kafka source .*connection refused/);
});

Deno.test("readiness: an ended pipeline is not ready; a file pipeline needs no connection", () => {
  const { metrics, pipeline } = setUp([]);
  pipeline.modelLoaded({ name: "car", version: "1", sha256: "00" });
  assert.deepEqual(metrics.readiness().ready, true);
  pipeline.ended = true;
  assert.deepEqual(metrics.readiness().reasons, ["pipeline main: ended"]);
});

Deno.test("partsToConnect: from the URLs", () => {
  const base = { sink: "-", dlq: undefined, exactlyOnce: false };
  assert.deepEqual(partsToConnect({ ...base, source: "file:/tmp/x" }), []);
  assert.deepEqual(partsToConnect({ ...base, source: "mqtts://h:8883/a" }), ["MQTT source"]);
  assert.deepEqual(partsToConnect({ ...base, source: "-", dlq: "kafka://h:9092/d" }), ["Kafka sink"]);
  assert.deepEqual(partsToConnect({ ...base, source: "-", sink: "mqtt://h:1883/p/{key}" }), ["MQTT sink"]);
  assert.deepEqual(
    partsToConnect({
      source: "kafka://h:9092/a",
      sink: "kafka://h:9092/b",
      dlq: undefined,
      exactlyOnce: false,
    }),
    ["Kafka source", "Kafka sink"],
  );
  assert.deepEqual(
    partsToConnect({
      source: "kafka://h:9092/a",
      sink: "kafka://h:9092/b",
      dlq: undefined,
      exactlyOnce: true,
    }),
    ["Kafka source"],
  );
});

Deno.test("README: the Metrics and health table lists exactly the edgeinfer_* metrics registered", async () => {
  const readme = await Deno.readTextFile(README);
  const section = readme.slice(
    readme.indexOf("## Metrics and health"),
    readme.indexOf("## Links and scale-out"),
  );
  const documented = [...section.matchAll(/^\| `(edgeinfer_[a-z_]+)`/gm)].map((m) => m[1]).sort();
  assert.deepEqual(documented, new Metrics().names().sort());
  // Each documented type is the registered one.
  const types = new Map(
    (await new Metrics().registry.getMetricsAsJSON()).map((m) => [m.name, String(m.type)]),
  );
  for (const [, name, type] of section.matchAll(/^\| `(edgeinfer_[a-z_]+)`\s*\| (\w+)/gm)) {
    assert.deepEqual(type, types.get(name), name);
  }
});

Deno.test("readiness: not ready once the run is stopping (SIGTERM: draining)", () => {
  const stopping = new AbortController();
  const metrics = new Metrics(stopping.signal);
  metrics.pipeline("main", { stats: new Stats(), health: new Health(), maxInFlight: 4, mustConnect: [] })
    .modelLoaded({ name: "m", version: "1", sha256: "00" });
  assert.deepEqual(metrics.readiness(), { ready: true, reasons: [] });
  stopping.abort();
  assert.deepEqual(metrics.readiness(), { ready: false, reasons: ["shutting down"] });
});

Deno.test("metrics: several pipelines, one series each by label; readiness lists each one's reasons", async () => {
  const metrics = new Metrics();
  const cars = metrics.pipeline("cars", {
    stats: new Stats(),
    health: new Health(),
    maxInFlight: 4,
    mustConnect: [],
  });
  const pumps = new Stats();
  metrics.pipeline("pumps", {
    stats: pumps,
    health: new Health(),
    maxInFlight: 8,
    mustConnect: ["Kafka source"],
  })
    .modelLoaded({ name: "pump", version: "3", sha256: "ff" });
  pumps.acked = 5;
  const text = await metrics.text();
  assert.equal(sample(text, `edgeinfer_events_acked_total{pipeline="cars"}`), 0);
  assert.equal(sample(text, `edgeinfer_events_acked_total{pipeline="pumps"}`), 5);
  assert.equal(sample(text, `edgeinfer_batches_in_flight_limit{pipeline="pumps"}`), 8);
  assert.equal(sample(text, `edgeinfer_batch_size_count{pipeline="cars"}`), 0);
  assert.equal(sample(text, `edgeinfer_batch_size_count{pipeline="pumps"}`), 0);
  assert.deepEqual(metrics.readiness().reasons, [
    "pipeline cars: model not loaded yet",
    "pipeline pumps: Kafka source not connected yet",
  ]);
  cars.modelLoaded({ name: "car", version: "1", sha256: "00" });
  assert.equal(metrics.readiness().reasons.length, 1);
});

Deno.test("metrics: device alerts (--alert-hysteresis): open gauge, transitions by state, devices kept", async () => {
  const { metrics, pipeline } = setUp();
  assert.equal(sample(await metrics.text(), `edgeinfer_device_alerts_open{pipeline="main"}`), undefined);
  const alerts = new DeviceAlerts({ openAnomalies: 1, window: 1, closeNormals: 1 }, {
    maxDevices: 10,
    idleMs: 1e6,
  });
  pipeline.deviceAlerts = alerts;
  alerts.observe("a", true, 1); // opens
  alerts.observe("b", true, 1); // opens
  alerts.observe("a", false, 2); // closes
  const text = await metrics.text();
  assert.equal(sample(text, `edgeinfer_device_alerts_open{pipeline="main"}`), 1);
  assert.equal(sample(text, `edgeinfer_device_alert_changes_total{pipeline="main",to="open"}`), 2);
  assert.equal(sample(text, `edgeinfer_device_alert_changes_total{pipeline="main",to="closed"}`), 1);
  assert.equal(sample(text, `edgeinfer_device_alert_devices{pipeline="main"}`), 2);
});

Deno.test("metrics: the shadow's agreement is read at scrape time; without a shadow, no shadow series", async () => {
  const { metrics, pipeline } = setUp([]);
  assert.equal(sample(await metrics.text(), 'edgeinfer_shadow_agreement_ratio{pipeline="main"}'), undefined);
  const agreement = new ShadowAgreement();
  pipeline.shadow = { model: { name: "car", version: "2" }, agreement, skipped: 0, droppedEvents: 0 };
  agreement.add([10, 45, 60, 70], [20, 55, 70, 40], 4, 50, 50);
  (pipeline.shadow as { skipped: number }).skipped = 256;
  const text = await metrics.text();
  assert.equal(sample(text, 'edgeinfer_shadow_events_total{pipeline="main",result="compared"}'), 4);
  assert.equal(sample(text, 'edgeinfer_shadow_events_total{pipeline="main",result="skipped"}'), 256);
  assert.equal(sample(text, 'edgeinfer_shadow_events_total{pipeline="main",result="dropped"}'), 0);
  assert.equal(sample(text, 'edgeinfer_shadow_disagreements_total{pipeline="main",kind="shadow_only"}'), 1);
  assert.equal(
    sample(text, 'edgeinfer_shadow_disagreements_total{pipeline="main",kind="production_only"}'),
    1,
  );
  assert.equal(sample(text, 'edgeinfer_shadow_agreement_ratio{pipeline="main"}'), 0.5);
  assert.ok(
    Math.abs(sample(text, 'edgeinfer_shadow_score_correlation{pipeline="main"}')! - agreement.correlation!) <
      1e-9,
  );
  assert.equal(sample(text, 'edgeinfer_shadow_info{pipeline="main",model="car",version="2"}'), 1);
});

Deno.test("metrics: edgeinfer_drift_psi per feature and for the score, once the drift window was filled", async () => {
  const metrics = new Metrics();
  const pipeline = metrics.pipeline("main", {
    stats: new Stats(),
    health: new Health(),
    maxInFlight: 4,
    mustConnect: [],
  });
  const drift = { full: false, values: (): [string, number][] => [["coolant_temp", 7.9], ["score", 0.875]] };
  pipeline.drift = drift;
  assert.doesNotMatch(await metrics.text(), /edgeinfer_drift_psi\{/, "no PSI before the window was filled");
  drift.full = true;
  const text = await metrics.text();
  assert.match(text, /^edgeinfer_drift_psi\{pipeline="main",feature="coolant_temp"\} 7\.9$/m);
  assert.match(text, /^edgeinfer_drift_psi\{pipeline="main",feature="score"\} 0\.875$/m);
});
