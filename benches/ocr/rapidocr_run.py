"""Reads a labelled image set with the Python `rapidocr` package, the
reference Pulse's OCR jobs are measured against (same models, same
onnxruntime). Writes one JSON line per image (`file`, `lines`: text,
score, box) and prints the throughput and latency as JSON.

    python rapidocr_run.py --images DIR --threads 2 --out reads.jsonl
"""

import argparse
import json
import pathlib
import time

from rapidocr import RapidOCR


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--models", default=None, help="directory of the .onnx files")
    args = ap.parse_args()
    params = {
        "EngineConfig.onnxruntime.intra_op_num_threads": args.threads,
        "EngineConfig.onnxruntime.inter_op_num_threads": 1,
        "Global.log_level": "error",
    }
    if args.models:
        models = pathlib.Path(args.models)
        params["Det.model_path"] = str(models / "PP-OCRv6_det_small.onnx")
        params["Rec.model_path"] = str(models / "PP-OCRv6_rec_small.onnx")
        params["Cls.model_path"] = str(models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx")
    engine = RapidOCR(params=params)
    root = pathlib.Path(args.images)
    files = [json.loads(l)["file"] for l in (root / "labels.jsonl").read_text().splitlines()]
    latencies = []
    started = time.perf_counter()
    with open(args.out, "w") as out:
        for name in files:
            t0 = time.perf_counter()
            result = engine(str(root / name))
            latencies.append(time.perf_counter() - t0)
            lines = []
            if result.txts is not None:
                for text, score, box in zip(result.txts, result.scores, result.boxes):
                    lines.append({"text": text, "score": float(score),
                                  "box": [[float(x), float(y)] for x, y in box]})
            out.write(json.dumps({"file": name, "lines": lines}) + "\n")
    elapsed = time.perf_counter() - started
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    print(json.dumps({"images": len(files), "seconds": round(elapsed, 3),
                      "images_per_s": round(len(files) / elapsed, 3),
                      "p50_ms": round(pick(0.5) * 1000, 1), "p99_ms": round(pick(0.99) * 1000, 1)}))


if __name__ == "__main__":
    main()
