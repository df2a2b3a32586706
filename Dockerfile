# The Rivulet image: the `rivulet` command with its three packages; docker-compose.yml runs the feature
# worker, the learner and the API from it. Built in two stages: the first has a C compiler and builds the
# wheel with the compiled engine path (features._native, setup.py); the image itself installs that wheel
# and has no compiler. RIVULET_FEATURES_NATIVE=true: a worker whose wheel lacks it refuses to start.
# The image's dependencies are the tested ones: requirements-runtime.lock (scripts/lock; the pins of
# requirements.lock without the extras), installed with their hashes checked, then the wheel without
# resolving anything. The lock is for x86_64 Linux: on another platform, build with
# `--build-arg LOCKED=false` to let pip resolve pyproject.toml's ranges instead.
FROM python:3.11-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY features features
COPY streaming streaming
COPY serving serving
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ARG LOCKED=true
COPY requirements-runtime.lock /tmp/
COPY --from=build /wheels /wheels
RUN if [ "$LOCKED" = true ]; then \
      pip install --no-cache-dir --require-hashes -r /tmp/requirements-runtime.lock \
      && pip install --no-cache-dir --no-deps /wheels/*.whl && pip check; \
    else pip install --no-cache-dir /wheels/*.whl; fi \
    && rm -rf /wheels /tmp/requirements-runtime.lock

RUN useradd --system --home /data rivulet && mkdir -p /data && chown rivulet /data
USER rivulet
WORKDIR /data
ENV RIVULET_DATA_DIR=/data PYTHONUNBUFFERED=1 RIVULET_FEATURES_NATIVE=true
ENTRYPOINT ["rivulet"]
CMD ["--help"]
