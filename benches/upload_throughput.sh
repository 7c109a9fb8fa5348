#!/usr/bin/env bash
# Upload throughput into the stack's S3 server (versitygw), side by side in
# one run: one direct PUT of the whole file (the baseline), the store's own
# multipart upload, POST /v1/files through ingest, and a presigned upload
# (POST /v1/uploads, the parts straight to the store, then the completion
# that reads them back to check them). Median MB/s of ROUNDS rounds, each
# way in turn within a round, and each as a ratio of the direct PUT.
#   benches/upload_throughput.sh [MIB] [ROUNDS]     (default 256 MiB, 3 rounds)
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
MIB=${1:-256}
ROUNDS=${2:-3}

bench_setup upload
export PULSE_INGEST_LISTEN="127.0.0.1:28080" PULSE_INGEST_URL="http://127.0.0.1:28080" \
  PULSE_OBJECT_STORE_URL="s3://$PULSE_S3_BUCKET/$RUN" PULSE_INGEST_MAX_FILE_BYTES=$(( (MIB + 1) << 20 )) \
  AWS_ENDPOINT="$PULSE_S3_ENDPOINT" AWS_ACCESS_KEY_ID="$PULSE_S3_ACCESS_KEY" \
  AWS_SECRET_ACCESS_KEY="$PULSE_S3_SECRET_KEY" AWS_REGION=us-east-1 AWS_ALLOW_HTTP=true
start_bench_registry
start_process "$RUN-ingest" "$BIN/pulse-ingest"
wait_until 60 curl -sf "$PULSE_INGEST_URL/readyz" || die "ingest not ready"
trap 'stop_process "$RUN-ingest"; stop_process "$RUN-registry"; rm -rf "$PULSE_HOME/s3/root/$PULSE_S3_BUCKET/$RUN"; drop_bench_data' EXIT

log "uploading $MIB MiB four ways, $ROUNDS rounds"
"$BIN/pulse-upload-load" --ingest "$PULSE_INGEST_URL" --prefix "$RUN" --mib "$MIB" --rounds "$ROUNDS"
