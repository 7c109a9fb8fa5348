#!/usr/bin/env bash
# OCR accuracy and speed against the Python `rapidocr` package (the same
# models on the same onnxruntime), side by side in one run on one labelled
# set: COUNT snapshots from pulse-meter-images (seed 7), read by each with
# THREADS inference threads. Prints each one's line accuracy, character
# error rate, images/s and per-image p50/p99, and Pulse's throughput as a
# ratio of Python's. Pulse reads CONCURRENCY images at once (as a worker
# running that many jobs does); Python reads one at a time, as it can.
#   benches/ocr_read.sh [COUNT] [THREADS] [CONCURRENCY]    (default 500 2 4)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/common.sh
COUNT=${1:-500}
THREADS=${2:-2}
CONCURRENCY=${3:-4}

bash scripts/install.sh >/dev/null
export_stack_env
cargo build --release --quiet -p pulse-testkit --bin pulse-meter-images -p pulse-benches --bin pulse-ocr-read
BIN="$CARGO_TARGET_DIR/release"
OUT="$PULSE_HOME/bench/ocr-$COUNT"
if [ ! -f "$OUT/set/labels.jsonl" ] || [ "$(wc -l < "$OUT/set/labels.jsonl")" -ne "$COUNT" ]; then
  log "rendering $COUNT labelled snapshots (seed 7)"
  rm -rf "$OUT" && "$BIN/pulse-meter-images" --out "$OUT/set" --count "$COUNT" --seed 7
fi
log "reading them with Python's rapidocr, $THREADS threads"
python_run=$("$VENV/bin/python" benches/ocr/rapidocr_run.py --images "$OUT/set" \
  --out "$OUT/python.jsonl" --threads "$THREADS" --models "$OCR_MODELS")
log "reading them with Pulse's OCR engine, $THREADS threads, $CONCURRENCY at once"
pulse_run=$("$BIN/pulse-ocr-read" --images "$OUT/set" --out "$OUT/pulse.jsonl" \
  --ocr-threads "$THREADS" --concurrency "$CONCURRENCY" 2>"$OUT/pulse.stderr")
"$VENV/bin/python" - "$OUT" "$python_run" "$pulse_run" <<'PY'
import json, subprocess, sys
out, py, rs = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
scores = subprocess.run([sys.executable, "benches/ocr/score.py", f"{out}/set/labels.jsonl",
                         f"{out}/python.jsonl", f"{out}/pulse.jsonl"],
                        check=True, capture_output=True, text=True).stdout.splitlines()
sp, sr = (json.loads(l) for l in scores)
print(f"{'':8} {'line acc %':>10} {'CER %':>7} {'images/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6}")
for name, run, s in (("python", py, sp), ("pulse", rs, sr)):
    ratio = run["images_per_s"] / py["images_per_s"]
    print(f"{name:8} {s['line_accuracy_pct']:>10.2f} {s['cer_pct']:>7.2f} {run['images_per_s']:>9.2f}"
          f" {run['p50_ms']:>8.0f} {run['p99_ms']:>8.0f} {ratio:>6.2f}")
print(f"images {sp['images']}, lines {sp['lines']}; Pulse's providers: {', '.join(rs['providers'])}")
PY
