#!/usr/bin/env python3
"""Trains the connected-car anomaly model shipped as models/car-anomaly.onnx.

Run through scripts/train.sh, which installs the pinned dependencies into a virtual environment.

1. Data: `edgeinfer simulate` writes fleets to JSON lines (simulated clock, --rate 0):
   - training:   healthy cars only (seed S);
   - validation: healthy cars (seed S+1) and a fleet with failures (seed S+2), to pick the threshold;
   - held-out:   a fleet with failures from a different seed (S+1000), never seen during training or
                 threshold selection, for the metrics of the model card.
2. Per-device features (README "Per-device features"): the columns scripts/train/car_features.json defines
   (the coolant against the car's own baseline and its rate of change, each tire against its own baseline),
   computed per car in event time by device_features.py exactly as edgeinfer computes them at the edge; the
   spec is written into the model as its edgeinfer.device_features metadata.
3. Model, two terms added into one score:
   - an autoencoder (scikit-learn MLPRegressor trained to reproduce its input) on the 18 sensor readings,
     standardised: the mean over the 18 of the squared reconstruction error in standardised units;
   - a dead-zone term on the per-device columns: sum over them of ((|d - mean| - dead zone) / std)^2
     where |d - mean| exceeds the dead zone (the 99.999 % quantile of |d - mean| on healthy training
     cars), else 0: silent on healthy cars, large on a young leak or a coolant climbing on its own.
   The scaling is folded into the ONNX graph, so the model takes raw readings and the derived columns:
   input `input` float32 [N, 18 + 6]; output `score` float32 [N].
4. Threshold: the score threshold with the best F1 on the validation events (anomaly = score > t).
5. Metrics on three held-out fleets (the card's, one of `simulate`'s defaults, one shaped like the demo):
   precision / recall / F1 per reading, overall and per failure mode, and per alert with the device
   alert rule ALERT_RULE (alert_metrics below, scripts/train/evaluate.ts --alerts alike).
6. Drift baseline (edgeinfer.baseline): 10 quantile bins per sensor reading (training fleet) and for the
   score (healthy validation fleet), with the measured fraction per bin; README "Drift watch".

Same seed (and same dependency versions) -> same model and the same metrics.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from device_features import columns as device_columns, spec_json

FEATURES = [
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
]
MODES = ["tire_pressure", "shock", "drive_shaft", "overheating", "firmware"]

ROOT = Path(os.environ.get("EDGEINFER_ROOT") or Path(__file__).resolve().parents[2])
MODEL_NAME = "car-anomaly"
MODEL_VERSION = "2"
DEVICE_FEATURES = Path(__file__).resolve().parent / "car_features.json"
# The dead zone of a per-device column: this quantile of |d - mean| on the healthy training cars.
DEAD_ZONE_QUANTILE = 0.99999
# --alert-hysteresis for the per-alert figures: open at 3 anomalies among a car's last 5 readings, close
# after 10 normal ones in a row. An alert is expected within ALERT_DUE_S of a failure's onset (alert_metrics).
ALERT_RULE = (3, 5, 10)
ALERT_DUE_S = 30

# Fleets: cars x readings per car (1 simulated second apart). Failures: probability per car per
# simulated minute for each mode, and the fraction of cars failing from the start.
# Held-out fleets: "heldout" is the card's own; "simulate" is `simulate`'s defaults (interval 1 s with
# --rate 0, 2 % failing from the start, 0.012 per mode per minute); "demo" is shaped like scripts/demo.sh's
# 30 s (1000 cars, 3000 events/s).
FULL = {
    "train": dict(cars=400, readings=600),
    "val_healthy": dict(cars=100, readings=600),
    "val_failing": dict(cars=100, readings=600, initial=0.3, p=0.01),
    "heldout": dict(cars=200, readings=600, initial=0.1, p=0.01),
    "simulate": dict(cars=300, readings=200, initial="default"),
    "demo": dict(cars=1000, readings=90, initial="default", interval=1 / 3),
    "hidden": (64, 12, 64),
    "max_iter": 150,
}
SMALL = {
    "train": dict(cars=40, readings=100),
    "val_healthy": dict(cars=10, readings=100),
    "val_failing": dict(cars=10, readings=100, initial=0.5, p=0.05),
    "heldout": dict(cars=10, readings=100, initial=0.5, p=0.05),
    "simulate": dict(cars=10, readings=100, initial="default"),
    "demo": dict(cars=20, readings=90, initial="default", interval=1 / 3),
    "hidden": (16, 6, 16),
    "max_iter": 5,
}
HELD_OUT = ("heldout", "simulate", "demo")

# Drift baseline (edgeinfer.baseline): quantile bins per feature and for the score on healthy data.
BASELINE_BINS = 10

# Standard deviations below this fraction of the feature's typical magnitude are floored: a feature
# that never varies in healthy data (control_unit_firmware is always 2000) must not divide by ~0.
SCALE_FLOOR_FRACTION = 1e-3


def log(message: str) -> None:
    print(f"train: {message}", file=sys.stderr, flush=True)


def simulate(cmd: list[str], out: Path, seed: int, cars: int, readings: int, initial: float | str | None = None,
             p: float | None = None, interval: float = 1) -> None:
    args = cmd + [
        "simulate", "--cars", str(cars), "--count", str(cars * readings), "--seed", str(seed),
        "--rate", "0", "--interval", repr(interval), "--quiet", "--target", f"file:{out}",
    ]
    if initial is None:
        args.append("--healthy")
    elif initial == "default":
        pass
    else:
        args += ["--initial-failures", str(initial)]
        for mode in MODES:
            args += [f"--p-{mode.replace('_', '-')}", str(p)]
    log(" ".join(shlex.quote(a) for a in args))
    subprocess.run(args, check=True, cwd=ROOT)


def load(path: Path, spec: dict) -> dict:
    """A fleet's input rows (18 readings, then the per-device columns), labels, modes, cars and times."""
    with open(path) as f:
        events = [json.loads(line) for line in f]
    raw = np.asarray([[e[k] for k in FEATURES] for e in events], dtype=np.float32)
    return {
        "x": np.concatenate([raw, device_columns(spec, events)], axis=1),
        "y": np.asarray([bool(e["failure_occurred"]) for e in events]),
        "modes": [e["failure_modes"] for e in events],
        "cars": [e["car"] for e in events],
        "ts": np.asarray([e["ts"] for e in events], dtype=np.int64),
    }


def fit_scaler(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    floor = SCALE_FLOOR_FRACTION * np.maximum(np.abs(mean), 1.0)
    return mean.astype(np.float32), np.maximum(std, floor).astype(np.float32)


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> float:
    """Threshold t (anomaly = score > t) with the best F1; midway between neighbouring scores."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order].astype(np.float64)
    y = labels[order]
    tp = np.cumsum(y)
    fp = np.cumsum(~y)
    positives = y.sum()
    # Cutting after position i flags the i+1 highest scores; only cut between distinct scores.
    distinct = np.r_[s[1:] < s[:-1], True]
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / max(positives, 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    f1 = np.where(distinct, f1, -1)
    i = int(np.argmax(f1))
    below = s[i + 1] if i + 1 < len(s) else s[i] - 1.0
    return float((s[i] + below) / 2)


def baseline_bins(values: np.ndarray, bins: int = BASELINE_BINS) -> dict:
    """Inner edges at the 1/bins .. (bins-1)/bins quantiles (6 significant digits, repeats merged) and the
    fraction of `values` in each bin. Bin of x = number of edges <= x (edgeinfer counts the same way), so a
    constant feature has one edge and all of its mass in the last bin; the fractions are measured, not
    assumed to be 1/bins."""
    v = np.asarray(values, dtype=np.float64)
    qs = np.quantile(v, np.arange(1, bins) / bins)
    edges = sorted({float(f"{q:.6g}") for q in qs})
    counts = np.bincount(np.searchsorted(np.asarray(edges), v, side="right"), minlength=len(edges) + 1)
    return {"edges": edges, "expected": [round(float(c) / len(v), 6) for c in counts]}


def drift_baseline(names: list[str], x_features: np.ndarray, healthy_scores: np.ndarray) -> dict:
    """The edgeinfer.baseline metadata: what healthy data looks like, for the drift watch (README)."""
    return {
        "version": 1,
        "features": {name: baseline_bins(x_features[:, i]) for i, name in enumerate(names)},
        "score": baseline_bins(healthy_scores),
        "events": {"features": int(len(x_features)), "score": int(len(healthy_scores))},
    }


def fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def prf(flagged: np.ndarray, labels: np.ndarray) -> dict:
    tp = int((flagged & labels).sum())
    fp = int((flagged & ~labels).sum())
    fn = int((~flagged & labels).sum())
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else (
        0.0 if precision is not None and recall is not None else None)
    r4 = lambda v: None if v is None else round(v, 4)  # noqa: E731
    return {"events": int(len(labels)), "positives": int(labels.sum()), "tp": tp, "fp": fp, "fn": fn,
            "precision": r4(precision), "recall": r4(recall), "f1": r4(f1)}


def metrics(flagged: np.ndarray, labels: np.ndarray, modes: list[list[str]]) -> dict:
    """Same definitions as scripts/train/evaluate.ts.

    overall: all events. per mode: the healthy events plus the events whose only active failure is
    that mode (so precision counts the false alarms on healthy cars against each mode), and the
    recall over every event with that mode active (alone or not).
    """
    out = {"overall": prf(flagged, labels), "modes": {}}
    healthy = ~labels
    out["false_positive_rate"] = round(float(flagged[healthy].mean()) if healthy.any() else 0.0, 5)
    for mode in MODES:
        only = np.array([m == [mode] for m in modes])
        having = np.array([mode in m for m in modes])
        subset = healthy | only
        entry = prf(flagged[subset], labels[subset])
        entry["recall_any"] = round(float(flagged[having].mean()), 4) if having.any() else None
        out["modes"][mode] = entry
    return out


def device_alerts(cars: list[str], flagged: np.ndarray, rule: tuple[int, int, int] = ALERT_RULE) -> list[int]:
    """The readings that open a device alert, with --alert-hysteresis K/N,M's rule (src/alerts/hysteresis.ts):
    per car, open once K of its last N readings are anomalous; close after M normal ones in a row (closing
    clears the window)."""
    k, n, m = rule
    mask = (1 << n) - 1
    state: dict[str, list] = {}
    opened = []
    for i, car in enumerate(cars):
        s = state.get(car)
        if s is None:
            s = state[car] = [0, 0, False]  # recent bits, normals while open, open
        a = bool(flagged[i])
        s[0] = ((s[0] << 1) | int(a)) & mask
        if s[2]:
            s[1] = 0 if a else s[1] + 1
            if s[1] >= m:
                s[0], s[1], s[2] = 0, 0, False
        elif bin(s[0]).count("1") >= k:
            s[1], s[2] = 0, True
            opened.append(i)
    return opened


def alert_metrics(fleet: dict, flagged: np.ndarray) -> dict:
    """Per alert (the model card's definitions; scripts/train/evaluate.ts --alerts counts the same way).
    A failure's onset is its car's first failing reading. precision = alerts opened on a failing car / alerts
    opened. recall = failing cars whose alert opened within ALERT_DUE_S of the onset / failing cars that were
    due: failing from their first reading (a failure older than the fleet), or for at least ALERT_DUE_S by
    the fleet's end (a younger failure is not counted either way). Time to detect: first alert opened while
    failing - onset, in event time, per failure mode (of the car's first mode)."""
    cars, ts, y = fleet["cars"], fleet["ts"], fleet["y"]
    onset: dict[str, int] = {}
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    mode: dict[str, str] = {}
    for i, car in enumerate(cars):
        first.setdefault(car, int(ts[i]))
        if y[i] and car not in onset:
            onset[car] = int(ts[i])
            mode[car] = fleet["modes"][i][0]
        last[car] = int(ts[i])
    opened = device_alerts(cars, flagged)
    detected: dict[str, int] = {}
    true_alerts = 0
    for i in opened:
        if y[i]:
            true_alerts += 1
            detected.setdefault(cars[i], int(ts[i]))
    budget = ALERT_DUE_S * 1000
    due = [c for c, t in onset.items() if t == first[c] or last[c] - t >= budget]
    found = [c for c in due if c in detected and detected[c] - onset[c] <= budget]
    precision = true_alerts / len(opened) if opened else None
    recall = len(found) / len(due) if due else None
    f1 = 2 * precision * recall / (precision + recall) if precision and recall else None
    r4 = lambda v: None if v is None else round(v, 4)  # noqa: E731
    delays: dict[str, list[float]] = {}
    for c in detected:
        delays.setdefault(mode[c], []).append((detected[c] - onset[c]) / 1000)
    return {
        "rule": "%d/%d,%d" % ALERT_RULE, "detect_within_s": ALERT_DUE_S, "alerts": len(opened),
        "false_alerts": len(opened) - true_alerts, "failing_cars_due": len(due), "detected": len(found),
        "precision": r4(precision), "recall": r4(recall), "f1": r4(f1),
        "detect_s_median": {m: round(float(np.median(d)), 2) for m, d in sorted(delays.items())},
    }


def dead_zone(derived: np.ndarray) -> dict:
    """The per-device columns' term: healthy mean, std and dead zone (DEAD_ZONE_QUANTILE of |d - mean|)."""
    d = derived.astype(np.float64)
    mean = d.mean(axis=0)
    std = np.maximum(d.std(axis=0), 1e-6)
    zone = np.quantile(np.abs(d - mean), DEAD_ZONE_QUANTILE, axis=0)
    return {"mean": mean.astype(np.float32), "inv_std": (1 / std).astype(np.float32), "zone": zone.astype(np.float32)}


def build_onnx(mean: np.ndarray, scale: np.ndarray, coefs: list[np.ndarray], intercepts: list[np.ndarray],
               activation: str, zone: dict, spec: dict, threshold: float, meta_extra: dict):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    n = len(FEATURES)
    k = len(spec["features"])
    i64 = lambda name, values: numpy_helper.from_array(np.asarray(values, dtype=np.int64), name)  # noqa: E731
    inits = [
        numpy_helper.from_array(mean.astype(np.float32), "mean"),
        numpy_helper.from_array((1.0 / scale).astype(np.float32), "inv_scale"),
        numpy_helper.from_array(zone["mean"], "device_mean"),
        numpy_helper.from_array(zone["zone"], "device_zone"),
        numpy_helper.from_array(zone["inv_std"], "device_inv_std"),
        i64("raw_start", [0]), i64("raw_end", [n]), i64("dev_end", [n + k]), i64("axis1", [1]),
    ]
    nodes = [
        helper.make_node("Slice", ["input", "raw_start", "raw_end", "axis1"], ["raw"]),
        helper.make_node("Slice", ["input", "raw_end", "dev_end", "axis1"], ["device"]),
        helper.make_node("Sub", ["raw", "mean"], ["centered"]),
        helper.make_node("Mul", ["centered", "inv_scale"], ["scaled"]),
    ]
    act = {"tanh": "Tanh", "relu": "Relu", "logistic": "Sigmoid"}[activation]
    x = "scaled"
    for i, (w, b) in enumerate(zip(coefs, intercepts)):
        inits.append(numpy_helper.from_array(w.astype(np.float32), f"W{i}"))
        inits.append(numpy_helper.from_array(b.astype(np.float32), f"B{i}"))
        last = i == len(coefs) - 1
        y = "reconstruction" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"B{i}"], [y if last else f"z{i}"]))
        if not last:
            nodes.append(helper.make_node(act, [f"z{i}"], [y]))
        x = y
    nodes += [
        helper.make_node("Sub", ["reconstruction", "scaled"], ["error"]),
        helper.make_node("Mul", ["error", "error"], ["squared"]),
        helper.make_node("ReduceMean", ["squared"], ["reconstruction_score"], axes=[1], keepdims=0),
        # Per-device term: sum of ((|d - mean| - zone) * inv_std)^2 beyond the dead zone.
        helper.make_node("Sub", ["device", "device_mean"], ["device_centered"]),
        helper.make_node("Abs", ["device_centered"], ["device_abs"]),
        helper.make_node("Sub", ["device_abs", "device_zone"], ["device_beyond"]),
        helper.make_node("Relu", ["device_beyond"], ["device_excess"]),
        helper.make_node("Mul", ["device_excess", "device_inv_std"], ["device_z"]),
        helper.make_node("Mul", ["device_z", "device_z"], ["device_z2"]),
        helper.make_node("ReduceSum", ["device_z2", "axis1"], ["device_score"], keepdims=0),
        helper.make_node("Add", ["reconstruction_score", "device_score"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "car_anomaly_autoencoder",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", n + k])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N"])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="edgeinfer-train",
                              producer_version=MODEL_VERSION)
    model.ir_version = 8
    model.doc_string = ("Connected-car anomaly model. Input: raw sensor readings in edgeinfer.features order, then "
                        "the per-device columns of edgeinfer.device_features. score = mean squared reconstruction "
                        "error of an autoencoder in standardised units + the per-device columns' squared excess "
                        "beyond their healthy dead zone; anomaly when score > edgeinfer.threshold.")
    props = {
        "edgeinfer.features": json.dumps(FEATURES),
        "edgeinfer.device_features": spec_json(spec),
        "edgeinfer.threshold": repr(float(np.float32(threshold))),
        "edgeinfer.score": "score",
        "edgeinfer.name": MODEL_NAME,
        "edgeinfer.version": MODEL_VERSION,
        **meta_extra,
    }
    for key, v in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, v
    onnx.checker.check_model(model, full_check=True)
    return model


def score_onnx(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model_bytes, opts, providers=["CPUExecutionProvider"])
    out = []
    for i in range(0, len(x), 65536):
        out.append(session.run(["score"], {"input": x[i:i + 65536]})[0])
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "models" / "car-anomaly.onnx"), help="ONNX file to write")
    ap.add_argument("--seed", type=int, default=1, help="seed of the data and the training (default 1)")
    ap.add_argument("--small", action="store_true", help="tiny data and few iterations (CI: seconds)")
    ap.add_argument("--edgeinfer", default=None,
                    help="command that runs edgeinfer, from the repository root "
                         "(default: $EDGEINFER_CMD or 'deno run -A main.ts')")
    ap.add_argument("--device-features", default=str(DEVICE_FEATURES),
                    help="the per-device feature spec (default: scripts/train/car_features.json)")
    ap.add_argument("--work-dir", default=None, help="where to keep the generated fleets (default: a temp dir)")
    ap.add_argument("--metrics-out", default=None,
                    help="write the metrics as JSON here (default: the --out path with .metrics.json)")
    args = ap.parse_args()

    cfg = SMALL if args.small else FULL
    cmd = shlex.split(args.edgeinfer or os.environ.get("EDGEINFER_CMD") or "deno run -A main.ts")
    started = time.time()
    tmp = None
    if args.work_dir:
        work = Path(args.work_dir).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="edgeinfer-train-")
        work = Path(tmp.name).resolve()

    spec = json.loads(Path(args.device_features).read_text())
    derived_names = [f["name"] for f in spec["features"]]
    n = len(FEATURES)
    seeds = {"train": args.seed, "val_healthy": args.seed + 1, "val_failing": args.seed + 2,
             "heldout": args.seed + 1000, "simulate": args.seed + 2000, "demo": args.seed + 3000}
    data = {}
    for name, seed in seeds.items():
        path = work / f"{name}.jsonl"
        simulate(cmd, path, seed, **cfg[name])
        data[name] = load(path, spec)
    t_data = time.time() - started

    from sklearn.neural_network import MLPRegressor

    x_all = data["train"]["x"]
    x_train = x_all[:, :n]
    mean, scale = fit_scaler(x_train)
    z_train = (x_train - mean) / scale
    net = MLPRegressor(hidden_layer_sizes=cfg["hidden"], activation="tanh", solver="adam", alpha=1e-6,
                       batch_size=256, learning_rate_init=1e-3, max_iter=cfg["max_iter"], tol=1e-6,
                       n_iter_no_change=12, early_stopping=not args.small, validation_fraction=0.1,
                       shuffle=True, random_state=args.seed)
    t0 = time.time()
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        net.fit(z_train, z_train)
    t_fit = time.time() - t0
    log(f"trained {n}->{'->'.join(map(str, cfg['hidden']))}->{n} autoencoder on "
        f"{len(x_train)} healthy readings: {net.n_iter_} epochs, loss {net.loss_:.5f}, {t_fit:.1f} s")
    zone = dead_zone(x_all[:, n:])
    log("per-device columns (healthy mean / dead zone): " + ", ".join(
        f"{name} {m:.3g} / {z:.3g}" for name, m, z in zip(derived_names, zone["mean"], zone["zone"])))

    def onnx_model(threshold: float, extra: dict):
        return build_onnx(mean, scale, net.coefs_, net.intercepts_, "tanh", zone, spec, threshold, extra)

    # Threshold on validation data, scored by the exported graph itself.
    pbytes = onnx_model(0.0, {}).SerializeToString()
    xv = np.concatenate([data["val_healthy"]["x"], data["val_failing"]["x"]])
    yv = np.concatenate([data["val_healthy"]["y"], data["val_failing"]["y"]])
    threshold = best_f1_threshold(score_onnx(pbytes, xv), yv)
    threshold = float(np.float32(threshold))
    log(f"threshold {threshold:.6g} (best F1 on {len(xv)} validation readings, {int(yv.sum())} failing)")

    # The readings from the training fleet (not the per-device columns: they depend on how long each car has
    # been seen); the score from the unseen healthy validation fleet (a model's own training data scores a
    # little lower than the healthy cars it will meet).
    baseline = drift_baseline(FEATURES, x_train, score_onnx(pbytes, data["val_healthy"]["x"]))
    model = onnx_model(threshold, {
        "edgeinfer.baseline": json.dumps(baseline, separators=(",", ":")),
        "edgeinfer.training": json.dumps({
            "seed": args.seed, "small": args.small, "train_readings": int(len(x_train)),
            "hidden": list(cfg["hidden"]), "epochs": int(net.n_iter_),
        }),
    })
    mbytes = model.SerializeToString()

    result = {"threshold": threshold}
    for name in HELD_OUT:
        fleet = data[name]
        flagged = score_onnx(mbytes, fleet["x"]) > threshold
        result[name] = metrics(flagged, fleet["y"], fleet["modes"])
        result[name]["alerts"] = alert_metrics(fleet, flagged)
    # The card's own fleet at the top level, as before (tests/model_test.ts reads it).
    result.update({k: v for k, v in result["heldout"].items() if k != "alerts"})
    result["validation"] = metrics(score_onnx(mbytes, xv) > threshold, yv,
                                   data["val_healthy"]["modes"] + data["val_failing"]["modes"])["overall"]
    result["data"] = {name: {"seed": seeds[name], **cfg[name]} for name in seeds}
    result["model"] = {"hidden": list(cfg["hidden"]), "epochs": int(net.n_iter_), "loss": round(float(net.loss_), 6),
                       "dead_zone_quantile": DEAD_ZONE_QUANTILE}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(mbytes)
    for name in HELD_OUT:
        r = result[name]
        o, a = r["overall"], r["alerts"]
        log(f"held-out fleet '{name}' (seed {seeds[name]}, {o['events']} readings, {o['positives']} failing): "
            f"per reading precision {fmt(o['precision'])} recall {fmt(o['recall'])} F1 {fmt(o['f1'])}, "
            f"false alarms on healthy readings {r['false_positive_rate']:.4%}; per alert ({a['rule']}) "
            f"precision {fmt(a['precision'])} recall {fmt(a['recall'])} F1 {fmt(a['f1'])} "
            f"({a['alerts']} alerts, {a['detected']} of {a['failing_cars_due']} failing cars within "
            f"{a['detect_within_s']} s; median seconds to detect {a['detect_s_median']})")
        for mode, e in r["modes"].items():
            log(f"  {mode:13s} precision {fmt(e['precision'])} recall {fmt(e['recall'])} F1 {fmt(e['f1'])} "
                f"({e['positives']} readings)")
    log(f"wrote {out} ({len(mbytes)} bytes); data {t_data:.1f} s, total {time.time() - started:.1f} s")
    metrics_out = Path(args.metrics_out) if args.metrics_out else out.with_suffix(".metrics.json")
    result["command"] = "scripts/train.sh" + (" --small" if args.small else "") + (
        f" --seed {args.seed}" if args.seed != 1 else "")
    metrics_out.write_text(json.dumps(result, indent=2) + "\n")
    log(f"wrote {metrics_out}")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
