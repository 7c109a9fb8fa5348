"""Trains and exports Pulse's telemetry anomaly model (processor/model/anomaly.onnx).

The model is a linear autoencoder (PCA) over standardised device readings: it
learns how readings move together on healthy devices, and scores an event by
how badly it reconstructs. Missing readings (NaN) are replaced by the training
mean inside the graph, so a device that does not report a sensor is scored on
the others.

Inputs:  features float32 [N, 4] in the order of FEATURES (NaN = missing)
Outputs: score    float32 [N]    mean squared reconstruction error
Metadata: features (comma-separated), threshold, model_version

Reproducible: fixed seed, numpy and onnx from PyPI (scripts/requirements.txt).
    python processor/model/train.py
"""

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FEATURES = ["temperature_c", "humidity_pct", "vibration_g", "battery_v"]
COMPONENTS = 2
SEED = 20261122
MODEL_VERSION = "pca-ae-1"
# Share of healthy training events allowed above the threshold.
FALSE_ALARM_RATE = 0.002


def healthy_readings(rng, n):
    """Readings of healthy devices, as pulse-simulate generates them."""
    phase = rng.uniform(0, 2 * np.pi, n)
    base = rng.normal(21.0, 2.0, n)
    temperature = base + 4.0 * np.sin(phase) + rng.normal(0, 0.3, n)
    humidity = 55.0 - 1.5 * (temperature - 21.0) + rng.normal(0, 1.0, n)
    vibration = 0.20 + 0.02 * (temperature - 21.0) + rng.normal(0, 0.02, n)
    battery = rng.uniform(3.5, 4.1, n)
    return np.stack([temperature, humidity, vibration, battery], axis=1)


def fit(x):
    mean = x.mean(axis=0)
    std = x.std(axis=0)
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
    x = healthy_readings(rng, 200_000)
    mean, std, w, threshold = fit(x)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "anomaly.onnx")
    export(mean, std, w, threshold, path)
    print(f"wrote {path}: threshold={threshold:.4f}")


if __name__ == "__main__":
    main()
