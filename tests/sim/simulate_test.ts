import assert from "node:assert/strict";
import {
  DEFAULT_START_TS,
  dueAtMs,
  eventsDue,
  parseSimulateArgs,
  runSimulation,
  SIMULATE_HELP,
  simulateCommand,
} from "../../src/cli/simulate.ts";
import { UsageError } from "../../src/errors.ts";
import { type CarEvent, FEATURES } from "../../src/sim/fleet.ts";
import { expandTopic, openTarget, type SimTarget, toJsonLines } from "../../src/sim/targets.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const DENO = Deno.execPath();

/** Runs the real CLI; returns stdout, stderr and the exit code. */
async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(DENO, {
    args: ["run", "-A", `${ROOT}main.ts`, "simulate", ...args],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}

class MemoryTarget implements SimTarget {
  readonly description = "memory";
  events: CarEvent[] = [];
  closed = false;
  write(events: CarEvent[]): Promise<void> {
    this.events.push(...events);
    return Promise.resolve();
  }
  close(): Promise<void> {
    this.closed = true;
    return Promise.resolve();
  }
}

Deno.test("pacing: events due follow elapsed time exactly and never exceed the total", () => {
  assert.equal(eventsDue(0, 1000, 0, Infinity), 0);
  assert.equal(eventsDue(1, 1000, 0, Infinity), 1);
  assert.equal(eventsDue(10, 1000, 4, Infinity), 6);
  assert.equal(eventsDue(1000, 3000, 2990, Infinity), 10);
  assert.equal(eventsDue(5000, 3000, 0, 500), 500);
  assert.equal(eventsDue(5000, 3000, 500, 500), 0);
  assert.equal(eventsDue(3, 1000, 5, Infinity), 0, "ahead of schedule: nothing due");
  // Summing bursts over any schedule of wake-ups gives rate x time.
  let sent = 0;
  for (let t = 0; t <= 10_000; t += 7.3) sent += eventsDue(t, 2500, sent, Infinity);
  assert.equal(sent, Math.floor(((Math.floor(10_000 / 7.3) * 7.3) * 2500) / 1000));
  assert.equal(dueAtMs(0, 1000), 1);
  assert.equal(dueAtMs(9, 2000), 5);
});

Deno.test("simulate options: defaults, the ts rule and --healthy", () => {
  const d = parseSimulateArgs([]);
  assert.equal(d.cars, 1000);
  assert.equal(d.rate, 1000);
  assert.equal(d.interval, 1);
  assert.equal(d.startTs, undefined, "paced runs stamp the wall clock");
  assert.equal(d.target, "-");
  const fast = parseSimulateArgs(["--rate", "0", "--count", "10"]);
  assert.equal(fast.startTs, DEFAULT_START_TS);
  assert.equal(fast.interval, 1);
  const paced = parseSimulateArgs(["--cars", "1000", "--rate", "4000", "--start-ts", "5"]);
  assert.equal(paced.interval, 0.25);
  assert.equal(paced.startTs, 5);
  const healthy = parseSimulateArgs(["--healthy"]);
  assert.equal(healthy.initialFailures, 0);
  assert.ok(Object.values(healthy.failureRates).every((p) => p === 0));
  const shock = parseSimulateArgs(["--p-shock", "0.5", "--initial-failures", "0.1"]);
  assert.equal(shock.failureRates.shock, 0.5);
  assert.equal(shock.initialFailures, 0.1);
});

Deno.test("simulate options: mistakes are one-line usage errors naming the flag", () => {
  const bad: [string[], RegExp][] = [
    [["--cars", "0"], /--cars/],
    [["--rate", "-1"], /--rate/],
    [["--rate", "fast"], /--rate/],
    [["--p-shock", "2"], /--p-shock/],
    [["--healthy", "--p-shock", "0.1"], /--healthy/],
    [["--duration", "0"], /--duration/],
    [["--seed", "x"], /--seed/],
    [["--bogus"], /bogus/],
  ];
  for (const [args, re] of bad) {
    assert.throws(
      () => parseSimulateArgs(args),
      (e: unknown) => e instanceof UsageError && re.test(e.message),
    );
  }
});

Deno.test("simulate --target validation: bad URLs and wildcard topics are usage errors", async () => {
  await assert.rejects(simulateCommand(["--target", "http://x"]), UsageError);
  await assert.rejects(simulateCommand(["--target", "mqtt://127.0.0.1:1/cars/+/sensors"]), /wildcard/);
  await assert.rejects(simulateCommand(["--target", "mqtt://127.0.0.1:1/cars/{car}?qos=3"]), /qos/);
  await assert.rejects(simulateCommand(["--target", "mqtt://127.0.0.1:1/c?bogus=1"]), /bogus/);
  assert.equal(expandTopic("cars/{car}/sensors", "car-00001"), "cars/car-00001/sensors");
});

Deno.test("runSimulation: --count events, deterministic with a simulated clock", async () => {
  const opts = parseSimulateArgs(["--cars", "5", "--count", "37", "--rate", "0", "--seed", "3", "--quiet"]);
  const a = new MemoryTarget(), b = new MemoryTarget();
  await runSimulation(opts, a);
  await runSimulation(opts, b);
  assert.equal(a.events.length, 37);
  assert.ok(a.closed);
  assert.equal(toJsonLines(a.events), toJsonLines(b.events));
  assert.equal(a.events[0].ts, DEFAULT_START_TS);
});

Deno.test("runSimulation: paced runs keep the rate and stamp wall-clock ts", async () => {
  const opts = parseSimulateArgs(["--cars", "10", "--rate", "2000", "--duration", "0.5", "--quiet"]);
  const target = new MemoryTarget();
  const t0 = Date.now();
  await runSimulation(opts, target);
  const took = Date.now() - t0;
  assert.equal(target.events.length, 1000, "rate x duration");
  assert.ok(took >= 450 && took < 1500, `took ${took} ms`);
  const first = target.events[0].ts, last = target.events.at(-1)!.ts;
  assert.ok(first >= t0 && last <= Date.now());
  assert.ok(last - first >= 400, "spread over the run, not one burst");
});

Deno.test("file target writes JSON lines, truncating the file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/events.jsonl`;
    await Deno.writeTextFile(path, "old content that must go\n".repeat(100));
    const opts = parseSimulateArgs(["--cars", "3", "--count", "10", "--rate", "0", "--quiet"]);
    await runSimulation(opts, await openTarget(`file:${path}`));
    const lines = (await Deno.readTextFile(path)).trimEnd().split("\n");
    assert.equal(lines.length, 10);
    const e = JSON.parse(lines[0]);
    for (const f of FEATURES) assert.equal(typeof e[f], "number");
    assert.equal(e.car, "car-00001");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("edgeinfer simulate --cars 50 --count 500 --seed 7 --rate 0 --target - prints the same 500 events twice", async () => {
  const args = ["--cars", "50", "--count", "500", "--seed", "7", "--rate", "0", "--target", "-"];
  const a = await cli(args);
  const b = await cli(args);
  assert.equal(a.code, 0, a.stderr);
  assert.equal(a.stdout, b.stdout);
  const lines = a.stdout.trimEnd().split("\n");
  assert.equal(lines.length, 500);
  for (const line of lines) {
    const e = JSON.parse(line);
    assert.deepEqual(Object.keys(e), ["car", "ts", ...FEATURES, "failure_occurred", "failure_modes"]);
  }
  assert.match(a.stderr, /sent 500 events to stdout/);
  const c = await cli(["--cars", "50", "--count", "500", "--seed", "8", "--rate", "0", "--quiet"]);
  assert.notEqual(c.stdout, a.stdout);
  assert.equal(c.stderr, "", "--quiet prints nothing on stderr");
});

Deno.test("edgeinfer simulate: a usage error exits 2 with one line; help lists the options", async () => {
  const r = await cli(["--rate=-3"]);
  assert.equal(r.code, 2);
  assert.equal(r.stderr.trimEnd().split("\n").length, 1);
  assert.equal(r.stdout, "");
  for (
    const flag of [
      "--cars",
      "--rate",
      "--count",
      "--duration",
      "--seed",
      "--target",
      "--p-shock",
      "--healthy",
    ]
  ) {
    assert.ok(SIMULATE_HELP.includes(flag), flag);
  }
});

Deno.test("edgeinfer simulate stops quietly when the reader closes stdout", async () => {
  const child = new Deno.Command(DENO, {
    args: ["run", "-A", `${ROOT}main.ts`, "simulate", "--rate", "0", "--cars", "10"],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.getReader();
  await reader.read();
  await reader.cancel();
  const status = await child.status;
  const stderr = new TextDecoder().decode((await new Response(child.stderr).arrayBuffer()) as ArrayBuffer);
  assert.equal(status.code, 0, stderr);
});
