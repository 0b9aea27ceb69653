import { UsageError } from "../errors.ts";
import { Logger, type LogSettings, rootLogger } from "../log.ts";
import {
  type CarEvent,
  DEFAULT_FAILURE_RATES,
  DEFAULT_INITIAL_FAILURES,
  FAILURE_MODES,
  type FailureMode,
  Fleet,
} from "../sim/fleet.ts";
import { openTarget, type SimTarget, TargetClosed } from "../sim/targets.ts";
import { applyShift, describeShift, type FeatureShift, parseShift } from "../sim/shift.ts";
import { intFlag, LOG_FLAGS, logSettings, numberFlag, parseFlags } from "./args.ts";
import { onShutdownSignal } from "./signals.ts";

/** `ts` of the first event when the simulated clock applies and --start-ts is not given. */
export const DEFAULT_START_TS = Date.UTC(2025, 0, 1);

const MODE_FLAGS = {
  tire_pressure: "p-tire-pressure",
  shock: "p-shock",
  drive_shaft: "p-drive-shaft",
  overheating: "p-overheating",
  firmware: "p-firmware",
} as const satisfies Record<FailureMode, string>;

export const SIMULATE_HELP = `edgeinfer simulate: a fleet of connected cars streaming sensor readings

Usage: edgeinfer simulate [--cars N] [--rate EVENTS_PER_S] [--count N | --duration S] [--target URL] [options]

Each event is one JSON object: car ("car-00001" …), ts (ms), 18 sensor readings (coolant_temp,
intake_air_temp, intake_air_flow_speed, battery_percentage, battery_voltage, current_draw, speed,
engine_vibration_amplitude, throttle_pos, tire_pressure_{1_1,1_2,2_1,2_2},
accelerometer_{1_1,1_2,2_1,2_2}_value, control_unit_firmware) and the ground truth
failure_occurred (boolean) and failure_modes (list). Cars report round-robin.

Fleet
  --cars N                number of cars (default 1000)
  --seed N                random seed; the same seed and options give the same readings (default 1)
  --interval SECONDS      simulated time between two readings of one car (default: cars / rate,
                          so simulated time runs with the wall clock; 1 with --rate 0)

Failures (once started, a failure stays until the end of the run; the defaults give ~5 % of cars
failing in a 30 s run: 2 % from the start and ~3 % that develop a failure during it)
  --initial-failures F    fraction of cars that start the run with one failure mode, chosen at
                          random and fully developed (default ${DEFAULT_INITIAL_FAILURES})
  Probability that a car develops each mode during one simulated minute:
  --p-tire-pressure P     one tire leaks to 20-24 psi instead of 30-34 (default ${DEFAULT_FAILURE_RATES.tire_pressure})
  --p-shock P             one corner's accelerometer reads 3-4 instead of 0-1 (default ${DEFAULT_FAILURE_RATES.shock})
  --p-drive-shaft P       engine vibration 1.5x its normal relation to speed (default ${DEFAULT_FAILURE_RATES.drive_shaft})
  --p-overheating P       coolant climbs 0.25 C/s to 120-135 C (default ${DEFAULT_FAILURE_RATES.overheating})
  --p-firmware P          control unit reports outdated firmware 1000 instead of 2000 (default ${DEFAULT_FAILURE_RATES.firmware})
  --healthy               no failures at all (all of the above 0), e.g. for training data

Drift (a fleet unlike the one a model was trained on; README "Drift watch")
  --shift LIST            change every reading after it is generated: FEATURE=+N (or -N) adds,
                          FEATURE=*F multiplies, e.g. coolant_temp=+8,battery_voltage=*0.95 (a hotter
                          climate, a sensor bias); failures and ground truth are those of the
                          unshifted fleet

Pace and length
  --rate N                events per second for the whole fleet, paced on the wall clock
                          (default 1000); 0 = as fast as possible
  --count N               stop after N events
  --duration SECONDS      stop after this long (with --rate > 0: exactly rate x duration events)
                          without --count or --duration the fleet runs until SIGINT/SIGTERM

Timestamps (ts, in ms)
  --start-ts MS|now       ts = MS + the event's simulated time: the output is then the same bytes on
                          every run. Default: with --rate 0, ${DEFAULT_START_TS} (2025-01-01T00:00:00Z);
                          with --rate > 0, no start: ts is the wall-clock time at which the event is
                          sent, so that end-to-end latency can be measured from it.

Output
  --target URL            - (stdout, the default), file:<path> (truncated),
                          mqtt://host:port/<topic template>[?qos=1&client-id=ID&max-in-flight=2000]
                            ({car} in the template becomes the car id; qos 0, 1 or 2, default 1;
                            username=, password-file=, or EDGEINFER_MQTT_PASSWORD for a login),
                          mqtts://host:port/<topic template>[?ca=PATH&cert=PATH&key=PATH&...] (TLS;
                            the broker's certificate is always verified),
                          kafka://host:port[,host:port]/<topic> (message key = car id; tls=true,
                            ca=, cert=, key=, sasl=, username=, password-file= or
                            EDGEINFER_KAFKA_PASSWORD as for 'edgeinfer run')
  --connections N         mqtt:// targets: one MQTT connection per car, up to N (default 1), each
                          car always on the same one, like a fleet of devices; max-in-flight= is
                          shared by them
  --quiet                 no progress line (every 5 s) or summary on stderr (= --log-level error)
  --log-format text|json  as for 'edgeinfer run' (also --log-level, --log-timestamps)

SIGINT/SIGTERM stops the fleet; what was generated is delivered before exit.

Examples
  edgeinfer simulate --cars 50 --count 500 --seed 7 --rate 0 --target -
  edgeinfer simulate --cars 1000 --rate 5000 --duration 30 --target 'mqtt://127.0.0.1:1883/cars/{car}/sensors?qos=1'
  edgeinfer simulate --cars 200 --healthy --rate 0 --count 100000 --target file:train.jsonl
  edgeinfer simulate --rate 2000 --target kafka://127.0.0.1:9092/car-sensors
`;

/** Options of one simulate run, after flag parsing. */
export interface SimulateOptions {
  cars: number;
  seed: number;
  rate: number;
  interval: number;
  count: number | undefined;
  durationS: number | undefined;
  /** undefined: ts = wall clock at send time. */
  startTs: number | undefined;
  failureRates: Record<FailureMode, number>;
  initialFailures: number;
  target: string;
  /** MQTT connections, one per car up to this many (at most `cars`). */
  connections: number;
  quiet: boolean;
  /** --log-format, --log-level (--quiet: error), --log-timestamps. */
  log: LogSettings;
  /** --shift: per-feature changes applied to every reading. */
  shift: FeatureShift[] | undefined;
}

export function parseSimulateArgs(argv: string[]): SimulateOptions {
  const { values: f } = parseFlags("simulate", argv, {
    cars: { type: "string" },
    seed: { type: "string" },
    interval: { type: "string" },
    rate: { type: "string" },
    count: { type: "string" },
    duration: { type: "string" },
    "start-ts": { type: "string" },
    target: { type: "string", default: "-" },
    healthy: { type: "boolean", default: false },
    "initial-failures": { type: "string" },
    quiet: { type: "boolean", default: false },
    ...LOG_FLAGS,
    connections: { type: "string" },
    "p-tire-pressure": { type: "string" },
    "p-shock": { type: "string" },
    "p-drive-shaft": { type: "string" },
    "p-overheating": { type: "string" },
    "p-firmware": { type: "string" },
    shift: { type: "string" },
  });
  const cars = intFlag("cars", f.cars, 1000, 1);
  const seedText = f.seed?.trim();
  if (seedText !== undefined && !/^-?\d+$/.test(seedText)) {
    throw new UsageError(`--seed must be an integer, got '${f.seed}'`);
  }
  const seed = seedText === undefined ? 1 : Number(seedText);
  const rate = numberFlag("rate", f.rate) ?? 1000;
  if (rate < 0) {
    throw new UsageError(`--rate must be >= 0 events per second (0 = as fast as possible), got ${rate}`);
  }
  const count = f.count === undefined ? undefined : intFlag("count", f.count, 0, 1);
  const durationS = numberFlag("duration", f.duration);
  if (durationS !== undefined && durationS <= 0) {
    throw new UsageError(`--duration must be a positive number of seconds, got ${durationS}`);
  }
  const intervalFlag = numberFlag("interval", f.interval);
  if (intervalFlag !== undefined && intervalFlag <= 0) {
    throw new UsageError(`--interval must be a positive number of seconds, got ${intervalFlag}`);
  }
  const interval = intervalFlag ?? (rate > 0 ? cars / rate : 1);

  let startTs: number | undefined;
  const startText = f["start-ts"];
  if (startText === "now") startTs = Date.now();
  else if (startText !== undefined) startTs = intFlag("start-ts", startText, 0);
  else if (rate === 0) startTs = DEFAULT_START_TS;

  const failureRates = { ...DEFAULT_FAILURE_RATES };
  for (const mode of FAILURE_MODES) {
    const flag = MODE_FLAGS[mode];
    const p = numberFlag(flag, f[flag]);
    if (p !== undefined) {
      if (f.healthy) throw new UsageError(`--healthy and --${flag} contradict each other; give one`);
      if (p < 0 || p > 1) throw new UsageError(`--${flag} must be a probability in 0..1, got ${p}`);
      failureRates[mode] = p;
    }
    if (f.healthy) failureRates[mode] = 0;
  }
  let initialFailures = numberFlag("initial-failures", f["initial-failures"]) ?? DEFAULT_INITIAL_FAILURES;
  if (f["initial-failures"] !== undefined && f.healthy) {
    throw new UsageError(`--healthy and --initial-failures contradict each other; give one`);
  }
  if (initialFailures < 0 || initialFailures > 1) {
    throw new UsageError(`--initial-failures must be a fraction in 0..1, got ${initialFailures}`);
  }
  if (f.healthy) initialFailures = 0;
  return {
    cars,
    seed,
    rate,
    interval,
    count,
    durationS,
    startTs,
    failureRates,
    initialFailures,
    target: f.target!,
    connections: Math.min(cars, intFlag("connections", f.connections, 1, 1)),
    quiet: f.quiet!,
    log: logSettings(f),
    shift: f.shift === undefined ? undefined : parseShift(f.shift),
  };
}

/**
 * Pacing: how many events are due `elapsedMs` after the start at `rate` events/s, given that
 * `sent` were already sent and the run stops at `total`. Scheduling by elapsed time (rather than a
 * timer per event) keeps the long-run rate exact whatever the timer resolution.
 */
export function eventsDue(elapsedMs: number, rate: number, sent: number, total: number): number {
  const due = Math.min(total, Math.floor((elapsedMs * rate) / 1000));
  return Math.max(0, due - sent);
}

/** Milliseconds from the start at which event number `index` (0-based) is due. */
export function dueAtMs(index: number, rate: number): number {
  return ((index + 1) * 1000) / rate;
}

/** Largest batch handed to a target at once. */
const MAX_BATCH = 2048;
const PROGRESS_EVERY_MS = 5000;

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export async function simulateCommand(argv: string[]): Promise<void> {
  const options = parseSimulateArgs(argv);
  rootLogger.configure(options.log);
  const target = await openTarget(options.target, options.connections, rootLogger);
  await runSimulation(options, target, rootLogger);
}

/**
 * Runs the fleet into an open target; resolves after the target delivered everything and closed. Progress
 * lines are info lines of `log` (default: a logger of the options' log settings).
 */
export async function runSimulation(
  options: SimulateOptions,
  target: SimTarget,
  log: Logger = new Logger(options.log),
): Promise<void> {
  const fleet = new Fleet({
    cars: options.cars,
    seed: options.seed,
    interval: options.interval,
    startTs: options.startTs ?? 0,
    failureRates: options.failureRates,
    initialFailures: options.initialFailures,
  });
  const wallClockTs = options.startTs === undefined;
  const shift = options.shift;
  const { rate } = options;
  let total = options.count ?? Infinity;
  if (options.durationS !== undefined && rate > 0) {
    total = Math.min(total, Math.round(rate * options.durationS));
  }
  const deadline = options.durationS !== undefined && rate === 0 ? options.durationS * 1000 : Infinity;

  let stopping = false;
  const removeSignals = onShutdownSignal(() => {
    stopping = true;
  });
  const start = performance.now();
  let sent = 0;
  let nextProgress = PROGRESS_EVERY_MS;
  let closedByReader = false;
  const progress = (final: boolean) => {
    const seconds = (performance.now() - start) / 1000;
    const perSecond = seconds > 0 ? Math.round(sent / seconds) : 0;
    const counts = fleet.modeCounts();
    const modes = FAILURE_MODES.filter((m) => counts[m] > 0).map((m) => `${m} ${counts[m]}`).join(", ");
    log.info(
      `simulate: ${final ? "sent" : "sending"} ${sent} events to ${target.description} in ` +
        `${seconds.toFixed(1)} s (${perSecond}/s); ${fleet.failingCars} of ${options.cars} cars failing` +
        (modes ? ` (${modes})` : "") + (options.shift ? `; shifted: ${describeShift(options.shift)}` : ""),
    );
  };

  const batch: CarEvent[] = [];
  try {
    while (!stopping && sent < total) {
      const elapsed = performance.now() - start;
      if (elapsed >= deadline) break;
      if (elapsed >= nextProgress && log.enabled("info")) {
        progress(false);
        nextProgress += PROGRESS_EVERY_MS;
      }
      let n: number;
      if (rate > 0) {
        n = eventsDue(elapsed, rate, sent, total);
        if (n === 0) {
          await sleep(Math.min(10, Math.max(1, dueAtMs(sent, rate) - elapsed)));
          continue;
        }
      } else {
        n = total - sent;
      }
      n = Math.min(n, MAX_BATCH);
      batch.length = 0;
      const now = wallClockTs ? Date.now() : 0;
      for (let i = 0; i < n; i++) {
        const event = fleet.next();
        if (wallClockTs) event.ts = now;
        if (shift) applyShift(event, shift);
        batch.push(event);
      }
      await target.write(batch);
      sent += n;
    }
  } catch (err) {
    if (!(err instanceof TargetClosed)) {
      removeSignals();
      await target.close().catch(() => {});
      throw err;
    }
    closedByReader = true;
  }
  removeSignals();
  await target.close();
  if (!closedByReader) progress(true);
}
