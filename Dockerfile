# One image for the API, the workers and the migrations job.
# TORCH_SPEC selects the torch build: CPU wheels by default; for GPU workers build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim

ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX="https://download.pytorch.org/whl/cpu"

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    OPTFORGE_DATA_DIR=/data

WORKDIR /app
RUN pip install --index-url "$TORCH_INDEX" "$TORCH_SPEC"
COPY pyproject.toml README.md ./
COPY optforge ./optforge
COPY optim_core ./optim_core
COPY core ./core
COPY search ./search
COPY workers ./workers
COPY api ./api
COPY migrations ./migrations
RUN pip install ".[service]"

RUN useradd --create-home --uid 1000 optforge && mkdir -p /data && chown optforge /data
USER optforge
EXPOSE 8000
CMD ["optforge", "serve", "--host", "0.0.0.0", "--port", "8000"]
