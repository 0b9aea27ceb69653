import assert from "node:assert/strict";
import {
  type CarEvent,
  carId,
  DEFAULT_FAILURE_RATES,
  FAILURE_MODES,
  type FailureMode,
  FEATURES,
  Fleet,
  type FleetOptions,
  Rng,
  stepProbability,
} from "../../src/sim/fleet.ts";

const NO_FAILURES = Object.fromEntries(FAILURE_MODES.map((m) => [m, 0])) as Record<FailureMode, number>;

function options(over: Partial<FleetOptions> = {}): FleetOptions {
  return {
    cars: 20,
    seed: 7,
    interval: 1,
    startTs: 1_735_689_600_000,
    failureRates: DEFAULT_FAILURE_RATES,
    initialFailures: 0.02,
    ...over,
  };
}

function take(fleet: Fleet, n: number): CarEvent[] {
  const out: CarEvent[] = [];
  for (let i = 0; i < n; i++) out.push(fleet.next());
  return out;
}

function json(events: CarEvent[]): string {
  return events.map((e) => JSON.stringify(e)).join("\n");
}

/** A fleet where every car has one random failure mode from the start, fully developed. */
function allFailing(seed = 3): Fleet {
  return new Fleet(options({ cars: 200, seed, failureRates: NO_FAILURES, initialFailures: 1 }));
}

function byCar(events: CarEvent[]): Map<string, CarEvent[]> {
  const map = new Map<string, CarEvent[]>();
  for (const e of events) {
    const list = map.get(e.car) ?? [];
    list.push(e);
    map.set(e.car, list);
  }
  return map;
}

Deno.test("Rng gives the same sequence for the same seed and a different one for another seed", () => {
  const a = new Rng(42), b = new Rng(42), c = new Rng(43);
  const xs = Array.from({ length: 5 }, () => a.next());
  assert.deepEqual(Array.from({ length: 5 }, () => b.next()), xs);
  assert.notDeepEqual(Array.from({ length: 5 }, () => c.next()), xs);
  for (const x of xs) assert.ok(x >= 0 && x < 1);
});

Deno.test("Fleet: the same seed gives the same bytes, another seed different ones", () => {
  const a = json(take(new Fleet(options()), 2000));
  const b = json(take(new Fleet(options()), 2000));
  const c = json(take(new Fleet(options({ seed: 8 })), 2000));
  assert.equal(a, b);
  assert.notEqual(a, c);
});

Deno.test("Fleet events carry exactly the schema's fields, in order, with sane values", () => {
  const fleet = new Fleet(options({ cars: 50, failureRates: NO_FAILURES, initialFailures: 0 }));
  const events = take(fleet, 50 * 300);
  const expected = ["car", "ts", ...FEATURES, "failure_occurred", "failure_modes"];
  const ranges: Record<string, [number, number]> = {
    coolant_temp: [70, 110],
    intake_air_temp: [0, 60],
    intake_air_flow_speed: [0.5, 60],
    battery_percentage: [0, 100],
    battery_voltage: [11, 13.2],
    current_draw: [0, 110],
    speed: [0, 150],
    engine_vibration_amplitude: [0.2, 6],
    throttle_pos: [0, 100],
    tire_pressure_1_1: [29, 36],
    tire_pressure_1_2: [29, 36],
    tire_pressure_2_1: [29, 36],
    tire_pressure_2_2: [29, 36],
    accelerometer_1_1_value: [0, 2.5],
    accelerometer_1_2_value: [0, 2.5],
    accelerometer_2_1_value: [0, 2.5],
    accelerometer_2_2_value: [0, 2.5],
    control_unit_firmware: [2000, 2000],
  };
  for (const e of events) {
    assert.deepEqual(Object.keys(e), expected);
    assert.match(e.car, /^car-\d{5}$/);
    for (const f of FEATURES) {
      const v = e[f];
      assert.equal(typeof v, "number", f);
      assert.ok(v >= ranges[f][0] && v <= ranges[f][1], `${f}=${v} outside ${ranges[f]}`);
    }
    assert.equal(e.failure_occurred, false);
    assert.deepEqual(e.failure_modes, []);
  }
  // Accelerometers are 0-1 except during short road bumps.
  const accel = events.map((e) => e.accelerometer_1_1_value);
  assert.ok(accel.filter((v) => v > 1).length / accel.length < 0.01);
});

Deno.test("Fleet reports cars round-robin, ts = start + simulated time", () => {
  const fleet = new Fleet(options({ cars: 4, interval: 2, startTs: 1000 }));
  const events = take(fleet, 9);
  assert.deepEqual(events.map((e) => e.car), [
    "car-00001",
    "car-00002",
    "car-00003",
    "car-00004",
    "car-00001",
    "car-00002",
    "car-00003",
    "car-00004",
    "car-00001",
  ]);
  assert.deepEqual(events.map((e) => e.ts), [1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000]);
  assert.equal(carId(41), "car-00042");
});

Deno.test("Fleet dynamics are correlated: throttle, air flow, current and vibration rise with speed", () => {
  const events = take(
    new Fleet(options({ cars: 100, failureRates: NO_FAILURES, initialFailures: 0 })),
    30000,
  );
  const corr = (a: number[], b: number[]) => {
    const n = a.length;
    const ma = a.reduce((s, x) => s + x, 0) / n, mb = b.reduce((s, x) => s + x, 0) / n;
    let sab = 0, saa = 0, sbb = 0;
    for (let i = 0; i < n; i++) {
      sab += (a[i] - ma) * (b[i] - mb);
      saa += (a[i] - ma) ** 2;
      sbb += (b[i] - mb) ** 2;
    }
    return sab / Math.sqrt(saa * sbb);
  };
  const speed = events.map((e) => e.speed);
  for (
    const f of [
      "throttle_pos",
      "intake_air_flow_speed",
      "current_draw",
      "engine_vibration_amplitude",
    ] as const
  ) {
    assert.ok(corr(speed, events.map((e) => e[f])) > 0.8, f);
  }
  // Batteries drain: each car's charge never goes up.
  for (const list of byCar(events).values()) {
    for (let i = 1; i < list.length; i++) {
      assert.ok(list[i].battery_percentage <= list[i - 1].battery_percentage);
    }
  }
});

Deno.test("Fleet failures stay once started, and the defaults give a few percent of cars failing in 30 s", () => {
  // 1000 cars, 3000 events/s for 30 s: interval = 1000 / 3000 s.
  const fleet = new Fleet(options({ cars: 1000, interval: 1 / 3, initialFailures: 0.02, seed: 11 }));
  const seen = new Map<string, string[]>();
  for (let i = 0; i < 90_000; i++) {
    const e = fleet.next();
    const before = seen.get(e.car);
    if (before) {
      for (const m of before) assert.ok(e.failure_modes.includes(m as FailureMode), `${e.car} lost ${m}`);
    }
    assert.equal(e.failure_occurred, e.failure_modes.length > 0);
    seen.set(e.car, [...e.failure_modes]);
  }
  const failing = fleet.failingCars / 1000;
  assert.ok(failing > 0.02 && failing < 0.09, `failing share ${failing}`);
});

Deno.test("Fleet with zero probabilities has no failures; per-minute probabilities scale with time", () => {
  const healthy = new Fleet(options({ cars: 50, failureRates: NO_FAILURES, initialFailures: 0 }));
  take(healthy, 50 * 600);
  assert.equal(healthy.failingCars, 0);
  assert.equal(stepProbability(0, 1), 0);
  assert.equal(stepProbability(1, 1), 1);
  // Probability over one minute in steps of 1 s equals the per-minute probability.
  const p = stepProbability(0.1, 1);
  assert.ok(Math.abs(1 - Math.pow(1 - p, 60) - 0.1) < 1e-12);
  // Only shock enabled, high rate: only shock appears.
  const shocks = new Fleet(
    options({ cars: 50, failureRates: { ...NO_FAILURES, shock: 0.5 }, initialFailures: 0 }),
  );
  take(shocks, 50 * 120);
  assert.ok(shocks.failingCars > 20);
  const counts = shocks.modeCounts();
  assert.equal(counts.shock, shocks.failingCars);
  for (const m of FAILURE_MODES) if (m !== "shock") assert.equal(counts[m], 0);
});

Deno.test("Each failure mode shifts its sensor as specified", () => {
  const events = take(allFailing(), 200 * 200).filter((e) => e.ts >= options().startTs + 120_000);
  const cars = byCar(events);
  let checked = 0;
  for (const list of cars.values()) {
    const mode = list[0].failure_modes[0];
    assert.equal(list[0].failure_modes.length, 1);
    for (const e of list) {
      const tires = [e.tire_pressure_1_1, e.tire_pressure_1_2, e.tire_pressure_2_1, e.tire_pressure_2_2];
      const accels = [
        e.accelerometer_1_1_value,
        e.accelerometer_1_2_value,
        e.accelerometer_2_1_value,
        e.accelerometer_2_2_value,
      ];
      switch (mode) {
        case "tire_pressure":
          assert.equal(tires.filter((t) => t >= 19.5 && t <= 26).length, 1, JSON.stringify(tires));
          assert.equal(tires.filter((t) => t >= 29.5).length, 3);
          break;
        case "shock":
          assert.equal(accels.filter((a) => a >= 3 && a <= 4).length, 1);
          break;
        case "drive_shaft": {
          const normal = 0.4 + 0.006 * e.throttle_pos + 0.022 * e.speed;
          const ratio = e.engine_vibration_amplitude / normal;
          assert.ok(ratio > 1.3 && ratio < 1.7, `vibration ratio ${ratio}`);
          break;
        }
        case "overheating":
          assert.ok(e.coolant_temp > 112, `coolant ${e.coolant_temp}`);
          break;
        case "firmware":
          assert.equal(e.control_unit_firmware, 1000);
          break;
      }
      checked++;
    }
  }
  assert.ok(checked > 1000);
  // Every mode was drawn by some car.
  const modes = new Set([...cars.values()].map((l) => l[0].failure_modes[0]));
  assert.equal(modes.size, FAILURE_MODES.length);
});

Deno.test("Overheating that starts during the run ramps up over about a minute", () => {
  const fleet = new Fleet(
    options({ cars: 1, failureRates: { ...NO_FAILURES, overheating: 1 }, initialFailures: 0 }),
  );
  const events = take(fleet, 240);
  const start = events.findIndex((e) => e.failure_occurred);
  assert.ok(start >= 0 && start < 60);
  assert.ok(events[start].coolant_temp < 105, "not hot at onset");
  assert.ok(events[start + 180 < 240 ? start + 180 : 239].coolant_temp > 110, "hot after minutes");
});

Deno.test("Fleet rejects invalid options", () => {
  assert.throws(() => new Fleet(options({ cars: 0 })), RangeError);
  assert.throws(() => new Fleet(options({ interval: 0 })), RangeError);
  assert.throws(() => new Fleet(options({ initialFailures: 2 })), RangeError);
  assert.throws(
    () => new Fleet(options({ failureRates: { ...DEFAULT_FAILURE_RATES, shock: -1 } })),
    RangeError,
  );
});
