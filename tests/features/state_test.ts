import assert from "node:assert/strict";
import { DeviceFeatureState } from "../../src/features/state.ts";
import { type DeviceFeatureSpec, parseDeviceFeatureSpec, specJson } from "../../src/features/spec.ts";

const SPEC: DeviceFeatureSpec = {
  key: "car",
  time: "ts",
  timeUnit: "ms",
  features: [
    { name: "t_mean", op: "mean", field: "temp", seconds: 10 },
    { name: "t_delta", op: "delta", field: "temp", seconds: 10 },
    { name: "t_slope", op: "slope", field: "temp", seconds: 10 },
  ],
};
const BIG = { maxDevices: 1000, idleSeconds: 3600 };

function columns(state: DeviceFeatureState, event: Record<string, unknown>): number[] | string {
  const row = new Float32Array(2 + state.width).fill(-1);
  const reason = state.compute(event, row, 2);
  return reason ?? [...row.subarray(2)];
}

const near = (got: number, want: number) => assert.ok(Math.abs(got - want) < 1e-5, `${got} != ${want}`);

Deno.test("first reading: mean = x, delta 0, slope 0; then the exponential weights of the elapsed event time", () => {
  const state = new DeviceFeatureState(SPEC, BIG);
  assert.deepEqual(columns(state, { car: "a", ts: 0, temp: 90 }), [90, 0, 0]);
  // 5 s later: a = 1 - exp(-0.5).
  const a = 1 - Math.exp(-0.5);
  const [mean, delta, slope] = columns(state, { car: "a", ts: 5000, temp: 100 }) as number[];
  near(delta, 10); // against the mean before this reading
  near(mean, 90 + a * 10);
  near(slope, a * (10 / 5));
  // A long gap: the weight is ~1, the state is as good as new.
  const [mean2, , slope2] = columns(state, { car: "a", ts: 5000 + 3_600_000, temp: 80 }) as number[];
  near(mean2, 80);
  near(slope2, (80 - 100) / 3600);
});

Deno.test("a reading not newer than its device's newest is scored against the state and leaves it unchanged", () => {
  const state = new DeviceFeatureState(SPEC, BIG);
  columns(state, { car: "a", ts: 10_000, temp: 90 });
  const after = columns(state, { car: "a", ts: 12_000, temp: 92 }) as number[];
  // Late (older) and duplicate (same ts) readings: mean and slope as they are, delta against the mean.
  const late = columns(state, { car: "a", ts: 11_000, temp: 200 }) as number[];
  assert.deepEqual([late[0], late[2]], [after[0], after[2]]);
  near(late[1], 200 - after[0]);
  const dup = columns(state, { car: "a", ts: 12_000, temp: 92 }) as number[];
  assert.deepEqual([dup[0], dup[2]], [after[0], after[2]]);
  assert.equal(state.late, 1);
  // The next in-order reading sees the state as if neither had come.
  const twin = new DeviceFeatureState(SPEC, BIG);
  columns(twin, { car: "a", ts: 10_000, temp: 90 });
  columns(twin, { car: "a", ts: 12_000, temp: 92 });
  assert.deepEqual(
    columns(state, { car: "a", ts: 13_000, temp: 95 }),
    columns(twin, { car: "a", ts: 13_000, temp: 95 }),
  );
});

Deno.test("devices are independent; numbers and strings both name a device; time in seconds", () => {
  const state = new DeviceFeatureState({ ...SPEC, timeUnit: "s" }, BIG);
  columns(state, { car: 7, ts: 0, temp: 10 });
  columns(state, { car: "b", ts: 0, temp: 50 });
  const [, delta] = columns(state, { car: "7", ts: 10, temp: 20 }) as number[];
  near(delta, 10); // car 7 and car "7" are the same device; 10 s, not 10 ms
  assert.equal(state.size, 2);
});

Deno.test("a reading without key, time or field is refused with the reason and changes no state", () => {
  const state = new DeviceFeatureState(SPEC, BIG);
  assert.match(columns(state, { ts: 0, temp: 1 }) as string, /missing device field 'car'/);
  assert.match(columns(state, { car: "a", temp: 1 }) as string, /missing time field 'ts'/);
  assert.match(
    columns(state, { car: "a", ts: "noon", temp: 1 }) as string,
    /time field 'ts' is not a number/,
  );
  assert.match(columns(state, { car: "a", ts: 0, temp: "hot" }) as string, /field 'temp' is not a number/);
  assert.equal(state.size, 0);
  columns(state, { car: "a", ts: 0, temp: 90 });
  assert.match(columns(state, { car: "a", ts: 1000 }) as string, /missing field 'temp'/);
  // The refused reading did not move the device's newest time: 1 s later is still in order.
  const [mean] = columns(state, { car: "a", ts: 1000, temp: 100 }) as number[];
  near(mean, 90 + (1 - Math.exp(-0.1)) * 10);
  // A column beyond float32 is refused, and nothing of the reading is stored.
  assert.match(
    columns(state, { car: "a", ts: 1001, temp: 1e39 }) as string,
    /'t_delta' = 1e\+39 is outside the float32 range/,
  );
  const [mean2] = columns(state, { car: "a", ts: 2000, temp: 100 }) as number[];
  assert.ok(mean2 < 100);
});

Deno.test("the state cap forgets the least recently seen device; the idle expiry forgets silent ones", () => {
  const state = new DeviceFeatureState(SPEC, { maxDevices: 3, idleSeconds: 60 });
  for (const car of ["a", "b", "c"]) columns(state, { car, ts: 0, temp: 1 });
  columns(state, { car: "a", ts: 1000, temp: 2 }); // a is now the most recently seen
  columns(state, { car: "d", ts: 0, temp: 1 }); // evicts b
  assert.equal(state.size, 3);
  assert.equal(state.evictedCap, 1);
  // b starts afresh (first reading: delta 0); a kept its state (delta against its mean).
  assert.equal((columns(state, { car: "b", ts: 5000, temp: 9 }) as number[])[1], 0); // evicts c
  assert.ok((columns(state, { car: "a", ts: 5000, temp: 9 }) as number[])[1] > 0);
  assert.equal(state.evictedCap, 2);
  // Many devices through a cap of 3: never more than 3.
  for (let i = 0; i < 10_000; i++) columns(state, { car: `x${i}`, ts: 0, temp: 1 });
  assert.equal(state.size, 3);
  assert.equal(state.counts().evictedCap, 2 + 10_000);

  const idle = new DeviceFeatureState(SPEC, { maxDevices: 100, idleSeconds: 60 });
  columns(idle, { car: "a", ts: 0, temp: 1 });
  columns(idle, { car: "b", ts: 0, temp: 1 });
  idle.expireIdle(Date.now() + 30_000);
  assert.equal(idle.size, 2);
  idle.expireIdle(Date.now() + 61_000);
  assert.equal(idle.size, 0);
  assert.equal(idle.evictedIdle, 2);
});

Deno.test("the spec: parsed from the metadata's JSON, refused with the part at fault", () => {
  const json = specJson(SPEC);
  assert.deepEqual(parseDeviceFeatureSpec(json), SPEC);
  assert.equal(specJson(parseDeviceFeatureSpec(json)), json);
  const bad = (spec: unknown, why: RegExp) =>
    assert.throws(() => parseDeviceFeatureSpec(JSON.stringify(spec)), why);
  bad([], /not a JSON object/);
  bad({ time: "ts", features: [] }, /needs 'key'/);
  bad({ key: "car", features: [] }, /needs 'time'/);
  bad({ key: "car", time: "ts", features: [] }, /needs 'features'/);
  bad({ key: "car", time: "ts", time_unit: "h", features: [{}] }, /time_unit "h"/);
  const f = { name: "n", op: "mean", field: "x", seconds: 5 };
  bad(
    { key: "car", time: "ts", features: [{ ...f, op: "median" }] },
    /op "median"; use one of mean, delta, slope/,
  );
  bad({ key: "car", time: "ts", features: [{ ...f, seconds: 0 }] }, /'seconds' is not a positive number/);
  bad({ key: "car", time: "ts", features: [f, f] }, /names feature 'n' twice/);
  assert.throws(() => parseDeviceFeatureSpec("{"), /is not JSON/);
});
