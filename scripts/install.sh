#!/usr/bin/env bash
# Installs what the local stack needs, skipping whatever is already there:
# ClickHouse, Mosquitto, kcat and Chromium from Debian's packages, the Apache
# Kafka jars from Maven Central (stack/kafka/pom.xml), a Python environment
# with ONNX Runtime and the test clients from PyPI (scripts/requirements.txt),
# playwright-core from npm for the dashboard's browser test, and versitygw
# (the S3-compatible test server) built from the Go module proxy, and the OCR
# models out of RapidOCR's wheel on PyPI.
source "$(dirname "$0")/common.sh"

install_debian_packages() {
  local missing=()
  command -v clickhouse-server >/dev/null || [ -x /usr/sbin/clickhouse-server ] || missing+=(clickhouse-server clickhouse-client)
  [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
  command -v kcat >/dev/null || missing+=(kcat)
  command -v curl >/dev/null || missing+=(curl)
  command -v kubectl >/dev/null || missing+=(kubectl)
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v npm >/dev/null || missing+=(nodejs npm)
  command -v go >/dev/null || missing+=(golang-go)
  [ -f "$OCR_FONT" ] || missing+=(fonts-dejavu-core)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_kafka() {
  [ -f "$KAFKA_LIBS/.pom" ] && cmp -s "$KAFKA_LIBS/.pom" "$ROOT/stack/kafka/pom.xml" && return 0
  log "assembling Apache Kafka $KAFKA_VERSION from Maven Central"
  rm -rf "$KAFKA_LIBS.tmp"
  mvn -q -B -Dstyle.color=never -f "$ROOT/stack/kafka/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$KAFKA_LIBS.tmp"
  mkdir -p "$(dirname "$KAFKA_LIBS")"
  cp "$ROOT/stack/kafka/pom.xml" "$KAFKA_LIBS.tmp/.pom"
  rm -rf "$KAFKA_LIBS" && mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
}

install_python() {
  local stamp="$VENV/.requirements"
  if [ -f "$stamp" ] && cmp -s "$stamp" "$ROOT/scripts/requirements.txt"; then
    return 0
  fi
  log "installing the Python environment (ONNX Runtime, test clients) into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/requirements.txt"
  cp "$ROOT/scripts/requirements.txt" "$stamp"
}

# playwright-core drives Debian's Chromium; it never downloads a browser.
install_browser_test() {
  local dir="$ROOT/query-api/dashboard/e2e" stamp="$ROOT/query-api/dashboard/e2e/node_modules/.lock-stamp"
  [ -f "$stamp" ] && cmp -s "$stamp" "$dir/package-lock.json" && return 0
  log "installing playwright-core (npm) for the dashboard's browser test"
  (cd "$dir" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  cp "$dir/package-lock.json" "$stamp"
}

# Go fetches the toolchain versitygw's go.mod asks for from the module
# proxy when the installed one is older (GOTOOLCHAIN=auto).
install_versitygw() {
  [ -x "$VERSITYGW" ] && return 0
  log "building versitygw $VERSITYGW_VERSION from the Go module proxy"
  local dir; dir=$(dirname "$VERSITYGW")
  GOPATH="$PULSE_CACHE/gopath" GOBIN="$dir.tmp" GOFLAGS=-mod=mod GOTOOLCHAIN=auto \
    go install "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

# The wheel is fetched by its pinned hash and only its .onnx files are kept.
install_ocr_models() {
  [ -f "$OCR_MODELS/PP-OCRv6_rec_small.onnx" ] && return 0
  log "taking the OCR models out of RapidOCR's wheel (PyPI)"
  local tmp="$OCR_MODELS.tmp"
  rm -rf "$tmp" && mkdir -p "$tmp/wheel"
  "$VENV/bin/pip" download -q --disable-pip-version-check --no-deps --require-hashes \
    -r "$ROOT/scripts/ocr-models.txt" -d "$tmp/wheel"
  "$VENV/bin/python" - "$tmp" <<'PY'
import pathlib, sys, zipfile
out = pathlib.Path(sys.argv[1])
wheel = next((out / "wheel").glob("rapidocr-*.whl"))
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.endswith(".onnx") or name.endswith("MODEL_LICENSES.md"):
            (out / pathlib.Path(name).name).write_bytes(z.read(name))
PY
  rm -rf "$tmp/wheel" "$OCR_MODELS" && mv "$tmp" "$OCR_MODELS"
}

install_debian_packages
install_kafka
install_versitygw
install_python
install_ocr_models
install_browser_test
[ -n "$(ort_dylib)" ] || die "ONNX Runtime's shared library is missing from $VENV"
log "install complete"
