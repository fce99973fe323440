# One image for every jobq process: migrate, worker, beat and Flower (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    JOBQ_HOME=/var/lib/jobq

WORKDIR /srv
COPY pyproject.toml README.md ./
COPY app ./app
COPY handlers ./handlers
COPY alembic ./alembic
COPY alembic.ini celeryconfig.py ./
# Editable, so alembic.ini and alembic/ stay beside the code the way `jobq migrate` expects.
# With the tracing extra (OpenTelemetry's SDK and OTLP exporter: docs/tracing.md), so setting
# OTEL_EXPORTER_OTLP_ENDPOINT is all a deployment does; `--build-arg JOBQ_EXTRAS=` leaves it
# out (processes then start ~60 ms sooner: redis-py loads the SDK's metrics when it is there).
ARG JOBQ_EXTRAS=tracing
RUN pip install -e ".[${JOBQ_EXTRAS}]" \
 && useradd --system --home-dir /var/lib/jobq --create-home jobq

USER jobq
CMD ["jobq", "--help"]
