# Worker container for Dataflow GPU jobs (see docs/operations.md, "Running on Dataflow with GPUs").
#
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/fashion-enrich:0.1.0 .
#   docker push REGION-docker.pkg.dev/PROJECT/REPO/fashion-enrich:0.1.0
#
# BEAM_VERSION and PYTHON_VERSION must match setup.py (tests/test_runners.py checks both).
ARG BEAM_VERSION=2.77.0
ARG PYTHON_VERSION=3.11

# The Beam SDK image of the same Beam and Python versions: source of the worker boot entrypoint.
FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam

# CUDA 12.5 / cuDNN 9 runtime: what the tensorflow 2.21 wheels are built against.
FROM nvidia/cuda:12.5.1-cudnn-runtime-ubuntu22.04
ARG PYTHON_VERSION
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    # Allocate GPU memory as needed (the handler also turns memory growth on).
    TF_FORCE_GPU_ALLOW_GROWTH=true \
    TF_CPP_MIN_LOG_LEVEL=2

RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common ca-certificates curl \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python${PYTHON_VERSION} python${PYTHON_VERSION}-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python${PYTHON_VERSION} -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /opt/fashion-enrich
COPY setup.py README.md ./
COPY runners/constraints.txt runners/constraints.txt
COPY pipeline pipeline
COPY models models
COPY schemas schemas
COPY runners runners
# The package with its tested, pinned dependency closure (shipped default models included).
RUN pip install --upgrade pip \
 && pip install -c runners/constraints.txt . \
 && python -c "import apache_beam, tensorflow, pipeline.build; print(apache_beam.__version__, tensorflow.__version__)"

# Beam's boot entrypoint: Dataflow starts the SDK harness through it.
COPY --from=beam /opt/apache/beam /opt/apache/beam
ENTRYPOINT ["/opt/apache/beam/boot"]
