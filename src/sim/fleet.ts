/**
 * The connected-car fleet: a pure, seeded model of N cars streaming sensor readings, with failure
 * modes as ground truth. No I/O, no wall clock, no Math.random: the same options give the same
 * events, byte for byte, on every run (see `Fleet`).
 *
 * Time is simulated. Cars report round-robin (car-00001, car-00002, …, car-N, car-00001, …); one
 * round takes `interval` simulated seconds and the cars' reports are spread evenly inside it, so the
 * k-th event of the stream happens at `k * interval / cars` seconds. All dynamics are written in
 * continuous time (exponential relaxation with time constants in seconds, event rates per second),
 * so the distribution of readings hardly depends on `interval`.
 *
 * Dynamics of one car:
 * - Driving: a target speed (stopped, city 25–60 km/h or highway 80–130 km/h) that changes on
 *   average every 45 s; speed relaxes toward it (time constant 8 s, at most +7 / −10 km/h per s)
 *   with a small cruise jitter. Acceleration is the speed change per second.
 * - throttle_pos (%) ≈ 8 + 0.32·speed + 3·acceleration; intake_air_flow_speed (g/s) ≈
 *   2.5 + 0.45·throttle + 0.05·speed; current_draw (A) ≈ accessories + 0.9·throttle;
 *   engine_vibration_amplitude ≈ (0.4 + 0.006·throttle + 0.022·speed) × a per-car factor
 *   (0.98–1.02) × (1 ± 2 % noise).
 * - coolant_temp relaxes (30 s) toward the car's thermostat setpoint (86–94 °C) + 0.06·throttle;
 *   intake_air_temp relaxes (20 s) toward ambient (5–30 °C, per car) + 5 + 0.1·throttle − 0.03·speed.
 * - battery_percentage drains with the current drawn (~30 % per hour at 60 A); battery_voltage ≈
 *   11.9 + 0.9·charge − 0.006·current.
 * - tire_pressure_A_S (axle A, side S) = the car's cold pressure (30.5–33.5 psi, ±0.3 per tire) +
 *   0.012·speed (warm tires); accelerometer_A_S ≈ 0.15 + 0.004·speed + noise, in 0–1, plus rare
 *   road bumps (about one per 10 min of driving) that shake one side of the car (up to ~1.7)
 *   and fade within a second.
 * - control_unit_firmware = 2000.
 *
 * Failure modes start at random (see `FleetOptions.failureRates`; some cars start the run with one,
 * see `FleetOptions.initialFailures`) and, once started, stay:
 * - tire_pressure: one tire leaks (1 psi/s) down to 20–24 psi.
 * - shock: one corner's accelerometer reads 3–4.
 * - drive_shaft: engine vibration is 1.5× its normal value for the speed and throttle (the whole
 *   curve; at a standstill the excess is small, ~0.2).
 * - overheating: the coolant setpoint climbs 0.25 °C/s by 30–40 °C (coolant reaches ~120–135 °C;
 *   the first minute looks normal); intake air warms a little with it.
 * - firmware: the control unit reports firmware 1000 (an outdated image) from then on.
 */

/** The 18 numeric sensor fields, in the order events carry them and models expect them. */
export const FEATURES = [
  "coolant_temp",
  "intake_air_temp",
  "intake_air_flow_speed",
  "battery_percentage",
  "battery_voltage",
  "current_draw",
  "speed",
  "engine_vibration_amplitude",
  "throttle_pos",
  "tire_pressure_1_1",
  "tire_pressure_1_2",
  "tire_pressure_2_1",
  "tire_pressure_2_2",
  "accelerometer_1_1_value",
  "accelerometer_1_2_value",
  "accelerometer_2_1_value",
  "accelerometer_2_2_value",
  "control_unit_firmware",
] as const;

export type Feature = typeof FEATURES[number];

export const FAILURE_MODES = ["tire_pressure", "shock", "drive_shaft", "overheating", "firmware"] as const;
export type FailureMode = typeof FAILURE_MODES[number];

/** One reading of one car, with its ground truth. Field order is the JSON field order. */
export type CarEvent =
  & { car: string; ts: number }
  & Record<Feature, number>
  & { failure_occurred: boolean; failure_modes: readonly FailureMode[] };

/**
 * Default probability that a car develops each failure mode during one simulated minute. Five
 * modes at 0.012 give ~3 % of cars a new failure in a 30 s run, ~6 % in a minute, ~45 % in 10
 * minutes (on top of `DEFAULT_INITIAL_FAILURES`).
 */
export const DEFAULT_FAILURE_RATES: Readonly<Record<FailureMode, number>> = {
  tire_pressure: 0.012,
  shock: 0.012,
  drive_shaft: 0.012,
  overheating: 0.012,
  firmware: 0.012,
};

export interface FleetOptions {
  /** Number of cars, named car-00001 … (at least 1). */
  cars: number;
  /** Any integer; the same seed gives the same stream. */
  seed: number;
  /** Simulated seconds between two reports of the same car (> 0). */
  interval: number;
  /** `ts` of the first event, in ms; `ts` = startTs + simulated time of the event. */
  startTs: number;
  /**
   * Probability, per car and per simulated minute, that each failure mode starts (0–1). A mode
   * that started stays until the end of the run. 0 disables a mode.
   */
  failureRates: Readonly<Record<FailureMode, number>>;
  /**
   * Fraction of cars (0–1) that already have one failure mode, chosen uniformly and fully
   * developed, when the run starts: the fleet has a history.
   */
  initialFailures: number;
}

/** Default `FleetOptions.initialFailures`. */
export const DEFAULT_INITIAL_FAILURES = 0.02;

/** Small, fast, seedable PRNG (mulberry32) with a cached Box–Muller normal. */
export class Rng {
  #state: number;
  #spare: number | undefined;

  constructor(seed: number) {
    // splitmix-style scramble so that nearby seeds give unrelated streams.
    let z = (Math.trunc(seed) ^ 0x9e3779b9) >>> 0;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    this.#state = (z ^ (z >>> 16)) >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }

  /** Integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Standard normal. */
  normal(): number {
    const spare = this.#spare;
    if (spare !== undefined) {
      this.#spare = undefined;
      return spare;
    }
    let u = this.next();
    while (u === 0) u = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    const theta = 2 * Math.PI * this.next();
    this.#spare = r * Math.sin(theta);
    return r * Math.cos(theta);
  }
}

interface Car {
  id: string;
  // Constants of the car.
  ambient: number;
  coolantSetpoint: number;
  tireCold: [number, number, number, number];
  vibrationFactor: number;
  accessories: number;
  // Driving state.
  speed: number;
  targetSpeed: number;
  jitter: number;
  coolant: number;
  intakeAir: number;
  battery: number;
  /** Bump level per side (0 = left: _1_1 and _2_1; 1 = right: _1_2 and _2_2). */
  bump: [number, number];
  // Failures.
  modes: readonly FailureMode[];
  leakTire: number;
  leakTarget: number;
  leakLoss: number;
  shockCorner: number;
  driveShaft: boolean;
  overheatMax: number;
  overheatExcess: number;
  firmware: number;
}

const TARGET_CHANGE_PER_S = 1 / 45;
const BUMP_PER_S = 1 / 600;
const SPEED_TAU_S = 8;
const COOLANT_TAU_S = 30;
const INTAKE_TAU_S = 20;
const BUMP_TAU_S = 0.35;
const LEAK_PSI_PER_S = 1;
const OVERHEAT_C_PER_S = 0.25;
const DRAIN_PCT_PER_AMP_S = 1.4e-4;

function round(x: number, decimals: 1 | 2 | 3): number {
  const f = decimals === 1 ? 10 : decimals === 2 ? 100 : 1000;
  return Math.round(x * f) / f;
}

function clamp(x: number, lo: number, hi: number): number {
  return x < lo ? lo : x > hi ? hi : x;
}

/** `car-00042` for index 41 (zero-based). */
export function carId(index: number): string {
  return `car-${String(index + 1).padStart(5, "0")}`;
}

/** Probability that an event with the given per-minute probability happens within dt seconds. */
export function stepProbability(perMinute: number, dtSeconds: number): number {
  if (perMinute <= 0) return 0;
  if (perMinute >= 1) return 1;
  return 1 - Math.pow(1 - perMinute, dtSeconds / 60);
}

/**
 * A fleet of cars producing events round-robin. `next()` returns a fresh event object each call
 * (safe to keep); nothing here reads the clock, so the stream depends only on the options.
 */
export class Fleet {
  readonly options: Readonly<FleetOptions>;
  readonly #rng: Rng;
  readonly #cars: Car[];
  readonly #dt: number;
  readonly #modeStep: number[];
  #index = 0;
  #failing = 0;

  constructor(options: FleetOptions) {
    if (!Number.isInteger(options.cars) || options.cars < 1) {
      throw new RangeError(`cars must be an integer >= 1, got ${options.cars}`);
    }
    if (!(options.interval > 0) || !Number.isFinite(options.interval)) {
      throw new RangeError(`interval must be a positive number of seconds, got ${options.interval}`);
    }
    if (!(options.initialFailures >= 0 && options.initialFailures <= 1)) {
      throw new RangeError(`initialFailures must be in 0..1, got ${options.initialFailures}`);
    }
    for (const mode of FAILURE_MODES) {
      const p = options.failureRates[mode];
      if (!(p >= 0 && p <= 1)) throw new RangeError(`failure rate for ${mode} must be in 0..1, got ${p}`);
    }
    this.options = { ...options, failureRates: { ...options.failureRates } };
    this.#rng = new Rng(options.seed);
    this.#dt = options.interval;
    this.#modeStep = FAILURE_MODES.map((m) => stepProbability(options.failureRates[m], this.#dt));
    this.#cars = [];
    for (let i = 0; i < options.cars; i++) {
      const car = this.#newCar(i);
      this.#cars.push(car);
      const roll = this.#rng.next();
      const mode = FAILURE_MODES[this.#rng.int(FAILURE_MODES.length)];
      if (roll < options.initialFailures) this.#startMode(car, mode, true);
    }
  }

  /** Events produced so far. */
  get produced(): number {
    return this.#index;
  }

  /** Cars with at least one active failure mode. */
  get failingCars(): number {
    return this.#failing;
  }

  /** Simulated time of the next event, in ms since the start. */
  get simulatedMs(): number {
    return (this.#index * this.#dt * 1000) / this.#cars.length;
  }

  /** Number of cars with each failure mode active. */
  modeCounts(): Record<FailureMode, number> {
    const counts = Object.fromEntries(FAILURE_MODES.map((m) => [m, 0])) as Record<FailureMode, number>;
    for (const car of this.#cars) for (const m of car.modes) counts[m]++;
    return counts;
  }

  #newCar(i: number): Car {
    const r = this.#rng;
    const base = r.uniform(30.5, 33.5);
    const roll = r.next();
    const target = roll < 0.1 ? 0 : roll < 0.55 ? r.uniform(25, 60) : r.uniform(80, 130);
    const setpoint = r.uniform(86, 94);
    const ambient = r.uniform(5, 30);
    return {
      id: carId(i),
      ambient,
      coolantSetpoint: setpoint,
      tireCold: [
        base + 0.3 * r.normal(),
        base + 0.3 * r.normal(),
        base + 0.3 * r.normal(),
        base + 0.3 * r.normal(),
      ],
      vibrationFactor: r.uniform(0.98, 1.02),
      accessories: r.uniform(2, 6),
      speed: target,
      targetSpeed: target,
      jitter: 0,
      coolant: setpoint + 0.06 * (8 + 0.32 * target),
      intakeAir: ambient + 5 + 0.1 * (8 + 0.32 * target) - 0.03 * target,
      battery: r.uniform(25, 100),
      bump: [0, 0],
      modes: [],
      leakTire: -1,
      leakTarget: 0,
      leakLoss: 0,
      shockCorner: -1,
      driveShaft: false,
      overheatMax: 0,
      overheatExcess: 0,
      firmware: 2000,
    };
  }

  #startFailures(car: Car): void {
    const r = this.#rng;
    for (let m = 0; m < FAILURE_MODES.length; m++) {
      const u = r.next();
      if (u < this.#modeStep[m]) this.#startMode(car, FAILURE_MODES[m], false);
    }
  }

  /** Starts a failure mode; `developed` puts it in its final state at once (a pre-existing failure). */
  #startMode(car: Car, mode: FailureMode, developed: boolean): void {
    if (car.modes.includes(mode)) return;
    const r = this.#rng;
    switch (mode) {
      case "tire_pressure":
        car.leakTire = r.int(4);
        car.leakTarget = r.uniform(20, 24);
        if (developed) car.leakLoss = car.tireCold[car.leakTire] - car.leakTarget;
        break;
      case "shock":
        car.shockCorner = r.int(4);
        break;
      case "drive_shaft":
        car.driveShaft = true;
        break;
      case "overheating":
        car.overheatMax = r.uniform(30, 40);
        if (developed) {
          car.overheatExcess = car.overheatMax;
          car.coolant += car.overheatMax;
          car.intakeAir += 0.15 * car.overheatMax;
        }
        break;
      case "firmware":
        car.firmware = 1000;
        break;
    }
    if (car.modes.length === 0) this.#failing++;
    car.modes = [...car.modes, mode];
  }

  /** Advances the next car by one interval and returns its reading. */
  next(): CarEvent {
    const cars = this.#cars;
    const n = cars.length;
    const i = this.#index % n;
    const car = cars[i];
    const r = this.#rng;
    const dt = this.#dt;
    const ts = this.options.startTs + Math.round(this.simulatedMs);
    this.#index++;

    this.#startFailures(car);

    // Driving.
    if (r.next() < 1 - Math.exp(-dt * TARGET_CHANGE_PER_S)) {
      const roll = r.next();
      car.targetSpeed = roll < 0.1 ? 0 : roll < 0.55 ? r.uniform(25, 60) : r.uniform(80, 130);
    } else {
      r.next();
    }
    const relax = Math.exp(-dt / SPEED_TAU_S);
    const wanted = car.targetSpeed + (car.speed - car.targetSpeed) * relax;
    const before = car.speed;
    let speed = clamp(wanted, before - 10 * dt, before + 7 * dt);
    // Cruise jitter: an Ornstein-Uhlenbeck term (2 km/h, 5 s) that vanishes at standstill.
    const jr = Math.exp(-dt / 5);
    car.jitter = car.jitter * jr + 2 * Math.sqrt(1 - jr * jr) * r.normal();
    speed = Math.max(0, speed);
    car.speed = speed;
    const shownSpeed = speed > 1 ? Math.max(0, speed + car.jitter) : 0;
    const accel = (speed - before) / dt;

    const throttle = clamp(8 + 0.32 * shownSpeed + 3 * accel + 1.5 * r.normal(), 0, 100);
    const airFlow = Math.max(0.5, 2.5 + 0.45 * throttle + 0.05 * shownSpeed + 0.4 * r.normal());
    const current = Math.max(0, car.accessories + 0.9 * throttle + 0.8 * r.normal());
    const vibration = (0.4 + 0.006 * throttle + 0.022 * shownSpeed) * car.vibrationFactor *
      (car.driveShaft ? 1.5 : 1) * (1 + 0.02 * r.normal());

    // Temperatures.
    if (car.overheatMax > 0) {
      car.overheatExcess = Math.min(car.overheatMax, car.overheatExcess + OVERHEAT_C_PER_S * dt);
    }
    const ck = Math.exp(-dt / COOLANT_TAU_S);
    const coolantTarget = car.coolantSetpoint + 0.06 * throttle + car.overheatExcess;
    car.coolant = coolantTarget + (car.coolant - coolantTarget) * ck;
    const ik = Math.exp(-dt / INTAKE_TAU_S);
    const intakeTarget = car.ambient + 5 + 0.1 * throttle - 0.03 * shownSpeed + 0.15 * car.overheatExcess;
    car.intakeAir = intakeTarget + (car.intakeAir - intakeTarget) * ik;

    // Battery.
    car.battery = Math.max(0, car.battery - current * dt * DRAIN_PCT_PER_AMP_S);
    const voltage = 11.9 + 0.9 * (car.battery / 100) - 0.006 * current + 0.03 * r.normal();

    // Tires.
    if (car.leakTire >= 0) {
      const full = car.tireCold[car.leakTire] - car.leakTarget;
      car.leakLoss = Math.min(full, car.leakLoss + LEAK_PSI_PER_S * dt);
    }
    const warm = 0.012 * shownSpeed;
    const t0 = car.tireCold[0] + warm + 0.08 * r.normal() - (car.leakTire === 0 ? car.leakLoss : 0);
    const t1 = car.tireCold[1] + warm + 0.08 * r.normal() - (car.leakTire === 1 ? car.leakLoss : 0);
    const t2 = car.tireCold[2] + warm + 0.08 * r.normal() - (car.leakTire === 2 ? car.leakLoss : 0);
    const t3 = car.tireCold[3] + warm + 0.08 * r.normal() - (car.leakTire === 3 ? car.leakLoss : 0);

    // Accelerometers, with road bumps on one side while moving.
    const bk = Math.exp(-dt / BUMP_TAU_S);
    car.bump[0] *= bk;
    car.bump[1] *= bk;
    const bumpDraw = r.next();
    if (shownSpeed > 5 && bumpDraw < 1 - Math.exp(-dt * BUMP_PER_S)) car.bump[r.int(2)] = r.uniform(0.5, 1.1);
    const road = 0.15 + 0.004 * shownSpeed;
    const a0 = this.#accel(road, car.bump[0], car.shockCorner === 0);
    const a1 = this.#accel(road, car.bump[1], car.shockCorner === 1);
    const a2 = this.#accel(road, car.bump[0], car.shockCorner === 2);
    const a3 = this.#accel(road, car.bump[1], car.shockCorner === 3);

    return {
      car: car.id,
      ts,
      coolant_temp: round(car.coolant + 0.3 * r.normal(), 2),
      intake_air_temp: round(car.intakeAir + 0.2 * r.normal(), 2),
      intake_air_flow_speed: round(airFlow, 2),
      battery_percentage: round(car.battery, 2),
      battery_voltage: round(voltage, 3),
      current_draw: round(current, 2),
      speed: round(shownSpeed, 2),
      engine_vibration_amplitude: round(vibration, 3),
      throttle_pos: round(throttle, 2),
      tire_pressure_1_1: round(t0, 2),
      tire_pressure_1_2: round(t1, 2),
      tire_pressure_2_1: round(t2, 2),
      tire_pressure_2_2: round(t3, 2),
      accelerometer_1_1_value: a0,
      accelerometer_1_2_value: a1,
      accelerometer_2_1_value: a2,
      accelerometer_2_2_value: a3,
      control_unit_firmware: car.firmware,
      failure_occurred: car.modes.length > 0,
      failure_modes: car.modes,
    };
  }

  #accel(road: number, bump: number, broken: boolean): number {
    const r = this.#rng;
    const noise = Math.abs(0.08 * r.normal());
    if (broken) return round(r.uniform(3, 4), 3);
    return round(clamp(road + noise, 0, 1) + bump * (0.8 + 0.4 * r.next()), 3);
  }
}
