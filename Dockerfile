# One image for every service; the command picks it: appview | hold | jetstream | dev
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    ATCR_HTTP_ADDR=0.0.0.0:5000 HOLD_HTTP_ADDR=0.0.0.0:8080 ATCR_JETSTREAM_STATUS_ADDR=0.0.0.0:5001 \
    ATCR_DATA_DIR=/var/lib/atcr/appview HOLD_DATA_DIR=/var/lib/atcr/hold STORAGE_ROOT_DIR=/var/lib/atcr/hold/blobs

RUN groupadd --system --gid 10001 atcr \
 && useradd --system --uid 10001 --gid atcr --home-dir /var/lib/atcr --create-home atcr

WORKDIR /app
COPY pyproject.toml README.md ./
COPY atcr ./atcr
COPY appview ./appview
COPY hold ./hold
COPY jetstream ./jetstream
COPY lexicons ./lexicons
COPY templates ./templates
# Editable install: lexicons/ and templates/ stay beside the packages that load them.
RUN pip install --no-compile -e . && mkdir -p /var/lib/atcr && chown -R atcr:atcr /var/lib/atcr

USER atcr
EXPOSE 5000 5001 8080
# Probes: GET /livez (process answers) and /readyz (dependencies answer) on each service's port.
ENTRYPOINT ["atcr"]
CMD ["appview"]
