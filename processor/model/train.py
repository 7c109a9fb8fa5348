"""Trains and exports Pulse's telemetry anomaly model (processor/model/anomaly.onnx).

The model is a linear autoencoder (PCA) over standardised device readings and
each reading's z-score against the device's own recent history (the
processor's rolling features, features.py): it learns how these move
together on healthy devices, and scores an event by how badly it
reconstructs. Missing values (NaN: a sensor not reported, or a z-score before
the device's warm-up) are replaced by the training mean inside the graph, so
such an event is scored on the rest.

Inputs:  features float32 [N, F] in the order of FEATURES (NaN = missing)
Outputs: score    float32 [N]    mean squared reconstruction error
Metadata: features (comma-separated), threshold, model_version

Reproducible: fixed seed, numpy and onnx from PyPI (scripts/requirements.txt).
    python processor/model/train.py
"""

import os

import numpy as np
from features import Device
import onnx
from onnx import TensorProto, helper, numpy_helper

READINGS = ["temperature_c", "humidity_pct", "vibration_g", "battery_v"]
FEATURES = READINGS + ["temperature_c.z", "humidity_pct.z", "vibration_g.z"]
COMPONENTS = 4
SEED = 20261122
MODEL_VERSION = "pca-ae-2"
DEVICES = 1000
# Share of healthy training events allowed above the threshold.
FALSE_ALARM_RATE = 0.002


def healthy_events(rng, n):
    """Features of healthy devices' events, each device's readings in
    sequence as pulse-simulate generates them (ingest/src/simulate/fleet.rs)."""
    base = rng.uniform(17.0, 25.0, DEVICES)
    phase = rng.uniform(0, 2 * np.pi, DEVICES)
    battery = rng.uniform(3.6, 4.1, DEVICES)
    devices = [Device() for _ in range(DEVICES)]
    rows = np.empty((n, len(FEATURES)))
    for i in range(n):
        d = i % DEVICES
        phase[d] += 0.01
        battery[d] = max(battery[d] - 0.00001, 3.5)
        t = base[d] + 4.0 * np.sin(phase[d]) + rng.normal(0, 0.3)
        readings = {
            "temperature_c": round(t, 3),
            "humidity_pct": round(55.0 - 1.5 * (t - 21.0) + rng.normal(0, 1.0), 3),
            "vibration_g": round(0.20 + 0.02 * (t - 21.0) + rng.normal(0, 0.02), 3),
            "battery_v": round(battery[d], 3),
        }
        features = devices[d].observe(str(i), i * 1000, readings)
        rows[i] = [readings.get(f, features.get(f)) for f in FEATURES]
    return rows


def fit(x):
    mean = np.nanmean(x, axis=0)
    std = np.nanstd(x, axis=0)
    # What the graph does with a missing value: the training mean.
    x = np.where(np.isnan(x), mean, x)
    z = (x - mean) / std
    _, _, vt = np.linalg.svd(z, full_matrices=False)
    w = vt[:COMPONENTS].T  # [F, K]
    recon = z @ w @ w.T
    scores = ((z - recon) ** 2).mean(axis=1)
    threshold = float(np.quantile(scores, 1 - FALSE_ALARM_RATE))
    return mean, std, w, threshold


def export(mean, std, w, threshold, path):
    f = len(FEATURES)
    init = [
        numpy_helper.from_array(mean.astype(np.float32).reshape(1, f), "mean"),
        numpy_helper.from_array(std.astype(np.float32).reshape(1, f), "std"),
        numpy_helper.from_array((w @ w.T).astype(np.float32), "wwt"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("IsNaN", ["features"], ["missing"]),
        helper.make_node("Where", ["missing", "mean", "features"], ["filled"]),
        helper.make_node("Sub", ["filled", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["z"]),
        helper.make_node("MatMul", ["z", "wwt"], ["recon"]),
        helper.make_node("Sub", ["z", "recon"], ["residual"]),
        helper.make_node("Mul", ["residual", "residual"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axis1"], ["score"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "pulse_anomaly",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", f])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        init,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 18)],
        producer_name="pulse",
        ir_version=9,
    )
    for k, v in {
        "features": ",".join(FEATURES),
        "threshold": repr(threshold),
        "model_version": MODEL_VERSION,
    }.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    onnx.checker.check_model(model)
    onnx.save(model, path)


def main():
    rng = np.random.default_rng(SEED)
    x = healthy_events(rng, 200_000)
    mean, std, w, threshold = fit(x)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "anomaly.onnx")
    export(mean, std, w, threshold, path)
    print(f"wrote {path}: threshold={threshold:.4f}")


if __name__ == "__main__":
    main()
