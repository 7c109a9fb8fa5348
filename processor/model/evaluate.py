"""Scores the model on held-out labelled data from the load generator and
prints precision and recall at the model's own threshold.

    pulse-simulate --transport none --rate 0 --count 200000 --devices 1000 \\
        --anomaly-rate 0.02 --seed 99 --labels-out heldout.csv
    python processor/model/evaluate.py heldout.csv
"""

import csv
import os
import sys

import numpy as np
import onnxruntime as ort
from features import Device


def main(path):
    model = os.path.join(os.path.dirname(os.path.abspath(__file__)), "anomaly.onnx")
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    features = meta["features"].split(",")
    threshold = float(meta["threshold"])
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    # Each device's rolling features, in the order its events were sent.
    devices = {}
    x = np.empty((len(rows), len(features)), dtype=np.float32)
    for i, r in enumerate(rows):
        readings = {k: float(r[k]) for k in ("temperature_c", "humidity_pct", "vibration_g", "battery_v")}
        history = devices.setdefault(r["source_id"], Device()).observe(r["event_id"], i, readings)
        x[i] = [readings.get(f, history.get(f, np.nan)) for f in features]
    labels = np.array([r["label"] for r in rows])
    flagged = session.run(None, {"features": x})[0] > threshold
    truth = labels != "normal"
    tp = int((flagged & truth).sum())
    fp = int((flagged & ~truth).sum())
    fn = int((~flagged & truth).sum())
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    print(f"model {meta['model_version']}, threshold {threshold:.4f}, {len(rows)} events, {int(truth.sum())} anomalies")
    print("| label | events | flagged | share flagged |")
    print("|---|---:|---:|---:|")
    for label in sorted(set(labels)):
        mask = labels == label
        print(f"| {label} | {int(mask.sum())} | {int(flagged[mask].sum())} | {flagged[mask].mean():.3f} |")
    print(f"\nprecision {precision:.3f}, recall {recall:.3f}, F1 {2 * precision * recall / max(precision + recall, 1e-9):.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
