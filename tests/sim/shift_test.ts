import assert from "node:assert/strict";
import { applyShift, describeShift, parseShift } from "../../src/sim/shift.ts";
import { Fleet } from "../../src/sim/fleet.ts";
import { parseSimulateArgs } from "../../src/cli/simulate.ts";
import { UsageError } from "../../src/errors.ts";

Deno.test("parseShift: add, subtract, multiply; mistakes name --shift and the form", () => {
  assert.deepEqual(parseShift("coolant_temp=+8, battery_voltage=*0.95,speed=-3"), [
    { feature: "coolant_temp", op: "+", value: 8 },
    { feature: "battery_voltage", op: "*", value: 0.95 },
    { feature: "speed", op: "+", value: -3 },
  ]);
  assert.equal(
    describeShift(parseShift("coolant_temp=+8,battery_voltage=*0.95")),
    "coolant_temp +8, battery_voltage ×0.95",
  );
  for (
    const [spec, message] of [
      ["coolant_temp=8", /--shift item 'coolant_temp=8' must be FEATURE=\+N, FEATURE=-N or FEATURE=\*F/],
      ["coolant=+8", /--shift names 'coolant', not a sensor field/],
      ["", /--shift needs at least one/],
    ] as const
  ) {
    assert.throws(
      () => parseShift(spec),
      (err: Error) => err instanceof UsageError && message.test(err.message),
    );
  }
});

Deno.test("applyShift: every reading shifted, the rest of the fleet unchanged", () => {
  const options = parseSimulateArgs([
    "--cars",
    "5",
    "--seed",
    "3",
    "--rate",
    "0",
    "--shift",
    "coolant_temp=+8,battery_voltage=*0.5",
  ]);
  assert.equal(options.shift?.length, 2);
  const plain = new Fleet({ ...options, startTs: 0 });
  const shifted = new Fleet({ ...options, startTs: 0 });
  for (let i = 0; i < 50; i++) {
    const a = plain.next();
    const b = shifted.next();
    applyShift(b, options.shift!);
    assert.ok(Math.abs(b.coolant_temp - (a.coolant_temp + 8)) < 1e-9);
    assert.ok(Math.abs(b.battery_voltage - a.battery_voltage * 0.5) < 1e-4);
    assert.equal(b.speed, a.speed);
    assert.deepEqual(b.failure_modes, a.failure_modes);
  }
  assert.equal(parseSimulateArgs(["--cars", "5"]).shift, undefined);
});
