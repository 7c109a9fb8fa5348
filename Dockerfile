# syntax=docker/dockerfile:1.7
# Images of Pulse's services, one target each:
#   docker build --target ingest    -t pulse/ingest .
#   docker build --target registry  -t pulse/registry .
#   docker build --target processor -t pulse/processor .
#   docker build --target processor-gpu -t pulse/processor-gpu .
#   docker build --target query-api -t pulse/query-api .
#   docker build --target worker    -t pulse/worker .
#   docker build --target worker-gpu -t pulse/worker-gpu .
# Runtime images are Debian slim with only the binary (and, for the
# processor, ONNX Runtime and the model), running as an unprivileged user.

FROM rust:1.95.0-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config libssl-dev zlib1g-dev python3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/pulse-ingest target/release/pulse-registry target/release/pulse-simulate \
       target/release/pulse-processor target/release/pulse-query-api target/release/pulse-worker /out/

# ONNX Runtime's shared library, from the same PyPI wheel the local stack uses.
FROM python:3.12.8-slim-bookworm AS onnxruntime
RUN pip install --no-cache-dir onnxruntime==1.31.1 \
 && cp /usr/local/lib/python3.12/site-packages/onnxruntime/capi/libonnxruntime.so.1.31.1 /libonnxruntime.so

FROM debian:12.8-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin pulse \
 && mkdir -p /var/lib/pulse/objects && chown 10001:10001 /var/lib/pulse/objects
USER 10001:10001
ENV PULSE_LOG_FORMAT=json

FROM runtime AS ingest
# The font the simulator's cameras draw their meters in.
USER root
RUN apt-get update && apt-get install -y --no-install-recommends fonts-dejavu-core && rm -rf /var/lib/apt/lists/*
USER 10001:10001
COPY --from=build /out/pulse-ingest /out/pulse-simulate /usr/local/bin/
ENV PULSE_INGEST_LISTEN=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/pulse-ingest"]

FROM runtime AS registry
COPY --from=build /out/pulse-registry /usr/local/bin/
ENV PULSE_REGISTRY_LISTEN=0.0.0.0:8081
EXPOSE 8081
ENTRYPOINT ["/usr/local/bin/pulse-registry"]

FROM runtime AS processor
COPY --from=build /out/pulse-processor /usr/local/bin/
COPY --from=onnxruntime /libonnxruntime.so /opt/onnxruntime/libonnxruntime.so
COPY processor/model/anomaly.onnx /opt/pulse/model/anomaly.onnx
ENV PULSE_PROCESSOR_LISTEN=0.0.0.0:8082 \
    ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so \
    PULSE_MODEL_PATH=/opt/pulse/model/anomaly.onnx
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/pulse-processor"]

# The processor for NVIDIA GPU nodes: ONNX Runtime with the CUDA provider
# and the CUDA/cuDNN libraries, all from PyPI wheels (CUDA 13, driver R580+).
# It runs on CPU too; PULSE_DEVICE=cuda selects the GPU.
FROM python:3.12.8-slim-bookworm AS onnxruntime-gpu
RUN pip install --no-cache-dir --target /opt/ort "onnxruntime-gpu[cuda,cudnn]==1.31.1" \
 && find /opt/ort/nvidia -type d -name lib > /opt/ort/ld.so.conf

FROM runtime AS runtime-gpu
USER root
COPY --from=onnxruntime-gpu /opt/ort /opt/ort
RUN cp /opt/ort/ld.so.conf /etc/ld.so.conf.d/nvidia-wheels.conf && ldconfig
USER 10001:10001

FROM runtime-gpu AS processor-gpu
COPY --from=build /out/pulse-processor /usr/local/bin/
COPY processor/model/anomaly.onnx /opt/pulse/model/anomaly.onnx
ENV PULSE_PROCESSOR_LISTEN=0.0.0.0:8082 \
    ORT_DYLIB_PATH=/opt/ort/onnxruntime/capi/libonnxruntime.so.1.31.1 \
    PULSE_MODEL_PATH=/opt/pulse/model/anomaly.onnx
EXPOSE 8082
ENTRYPOINT ["/usr/local/bin/pulse-processor"]

FROM runtime AS query-api
COPY --from=build /out/pulse-query-api /usr/local/bin/
ENV PULSE_QUERY_LISTEN=0.0.0.0:8090
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/pulse-query-api"]

# The OCR models, out of RapidOCR's wheel (pinned by hash, as install.sh takes them).
FROM python:3.12.8-slim-bookworm AS ocr-models
COPY scripts/ocr-models.txt /ocr-models.txt
RUN pip download --no-cache-dir --no-deps --require-hashes -r /ocr-models.txt -d /wheel \
 && mkdir /models && cd /models && python -m zipfile -e /wheel/rapidocr-*.whl /unpacked \
 && cp /unpacked/rapidocr/models/*.onnx /unpacked/rapidocr-*.dist-info/licenses/MODEL_LICENSES.md /models/

FROM runtime AS worker
COPY --from=build /out/pulse-worker /usr/local/bin/
COPY --from=onnxruntime /libonnxruntime.so /opt/onnxruntime/libonnxruntime.so
COPY --from=ocr-models /models /opt/pulse/ocr-models
ENV PULSE_WORKER_LISTEN=0.0.0.0:8095 \
    ORT_DYLIB_PATH=/opt/onnxruntime/libonnxruntime.so \
    PULSE_OCR_MODEL_DIR=/opt/pulse/ocr-models
EXPOSE 8095
ENTRYPOINT ["/usr/local/bin/pulse-worker"]

# The worker for NVIDIA GPU nodes, on the processor-gpu's ONNX Runtime. It
# runs on CPU too; PULSE_OCR_EXECUTION_PROVIDER=cuda selects the GPU.
FROM runtime-gpu AS worker-gpu
COPY --from=build /out/pulse-worker /usr/local/bin/
COPY --from=ocr-models /models /opt/pulse/ocr-models
ENV PULSE_WORKER_LISTEN=0.0.0.0:8095 \
    ORT_DYLIB_PATH=/opt/ort/onnxruntime/capi/libonnxruntime.so.1.31.1 \
    PULSE_OCR_MODEL_DIR=/opt/pulse/ocr-models
EXPOSE 8095
ENTRYPOINT ["/usr/local/bin/pulse-worker"]
