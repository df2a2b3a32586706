# The Rivulet image: the `rivulet` command with its three packages; docker-compose.yml runs the feature
# worker, the learner and the API from it.
FROM python:3.11-slim

WORKDIR /src
COPY pyproject.toml README.md ./
COPY features features
COPY streaming streaming
COPY serving serving
RUN pip install --no-cache-dir . && rm -rf /src

RUN useradd --system --home /data rivulet && mkdir -p /data && chown rivulet /data
USER rivulet
WORKDIR /data
ENV RIVULET_DATA_DIR=/data PYTHONUNBUFFERED=1
ENTRYPOINT ["rivulet"]
CMD ["--help"]
