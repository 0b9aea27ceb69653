#!/usr/bin/env python3
"""Per-device features for training, computed the way edgeinfer computes them at the edge.

The definitions come from one spec (JSON; the car model's is scripts/train/car_features.json), which the
training script also writes into the model as its `edgeinfer.device_features` metadata. This file and
src/features/state.ts implement the three operations operation for operation, in float64, so that both give
the same values on the same stream; tests/integration/feature_parity_test.ts checks it. For a reading x at
event time t of a device whose newest reading so far is at t_prev (dt = (t - t_prev) / 1000 seconds,
a = 1 - exp(-dt / seconds)):

  mean:  m <- m + a * (x - m); the column is m
  delta: the column is x - m; then m <- m + a * (x - m)
  slope: r <- r + a * ((x - previous x) / dt - r); the column is r

A device's first reading sets m = x and r = 0. A reading not newer than its device's newest is scored
against the state as it is and leaves it unchanged (README, Per-device features).

As a command (for the parity test, through `scripts/train.sh --device-features …`):
  device_features.py SPEC.json EVENTS.jsonl [MODEL.onnx FEATURES]
prints, per event, a JSON array of its derived columns (float32 values, as the model receives them); with a
model, also its score of the event's input row (the FEATURES, comma-separated, then the derived columns) by
onnxruntime, as the last value.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

OPS = ("mean", "delta", "slope")


def read_spec(spec: dict) -> dict:
    """Checks the spec's shape (edgeinfer checks it again, with friendlier messages, when it loads the model)."""
    assert isinstance(spec.get("key"), str) and isinstance(spec.get("time"), str), "spec needs key and time"
    assert spec.get("time_unit", "ms") in ("ms", "s"), "time_unit is ms or s"
    for f in spec["features"]:
        assert f["op"] in OPS and f["seconds"] > 0, f"bad feature {f}"
    return spec


def spec_json(spec: dict) -> str:
    """The spec as edgeinfer writes it (src/features/spec.ts specJson): fixed field order, no spaces."""
    return json.dumps({
        "key": spec["key"],
        "time": spec["time"],
        "time_unit": spec.get("time_unit", "ms"),
        "features": [{"name": f["name"], "op": f["op"], "field": f["field"], "seconds": f["seconds"]}
                     for f in spec["features"]],
    }, separators=(",", ":"))


class DeviceFeatures:
    """Keeps the state of every device (no bound: training data is finite) and computes each reading's columns."""

    def __init__(self, spec: dict):
        self.spec = read_spec(spec)
        self.key = spec["key"]
        self.time = spec["time"]
        self.scale = 1000 if spec.get("time_unit", "ms") == "s" else 1
        self.fields = [f["field"] for f in spec["features"]]
        self.ops = [OPS.index(f["op"]) for f in spec["features"]]
        self.taus = [float(f["seconds"]) for f in spec["features"]]
        self.names = [f["name"] for f in spec["features"]]
        self.devices: dict[str, list] = {}

    def compute(self, event: dict) -> list[float]:
        key = event[self.key]
        key = key if isinstance(key, str) else str(key)
        t = event[self.time] * self.scale
        xs = [event[name] for name in self.fields]
        n = len(self.ops)
        device = self.devices.get(key)
        if device is None:
            values = []
            for i in range(n):
                values += [0.0 if self.ops[i] == 2 else xs[i], xs[i]]
            self.devices[key] = [t, values]
            return [xs[i] if self.ops[i] == 0 else 0.0 for i in range(n)]
        newest, values = device
        dt = (t - newest) / 1000
        out = [0.0] * n
        if not dt > 0:
            for i in range(n):
                m = values[2 * i]
                out[i] = xs[i] - m if self.ops[i] == 1 else m
            return out
        for i in range(n):
            x = xs[i]
            a = 1 - math.exp(-dt / self.taus[i])
            s = values[2 * i]
            if self.ops[i] == 2:
                rate = (x - values[2 * i + 1]) / dt
                values[2 * i] = v = s + a * (rate - s)
            else:
                values[2 * i] = s + a * (x - s)
                v = values[2 * i] if self.ops[i] == 0 else x - s
            values[2 * i + 1] = x
            out[i] = v
        device[0] = t
        return out


def columns(spec: dict, events) -> np.ndarray:
    """The derived columns of `events` (in arrival order), float32 [len(events), features]."""
    state = DeviceFeatures(spec)
    return np.asarray([state.compute(e) for e in events], dtype=np.float32).reshape(-1, len(spec["features"]))


def main(argv: list[str]) -> int:
    if len(argv) not in (3, 5):
        print("usage: device_features.py SPEC.json EVENTS.jsonl [MODEL.onnx FEATURES]", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        spec = json.load(f)
    with open(argv[2]) as f:
        events = [json.loads(line) for line in f]
    derived = columns(spec, events)
    rows = derived
    if len(argv) == 5:
        import onnxruntime as ort

        fields = argv[4].split(",")
        raw = np.asarray([[e[k] for k in fields] for e in events], dtype=np.float32)
        session = ort.InferenceSession(argv[3], providers=["CPUExecutionProvider"])
        scores = session.run(["score"], {"input": np.concatenate([raw, derived], axis=1)})[0]
        rows = np.concatenate([derived, scores.reshape(-1, 1)], axis=1)
    out = sys.stdout
    for row in rows:
        out.write(json.dumps([float(v) for v in row]) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
