# syntax=docker/dockerfile:1
# One image for all three services; the compose file picks the module to run:
#   python -m services.ingest | services.router | services.notifier
# No secret is baked in: every credential arrives as an environment variable at run time.

FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A virtualenv keeps the installed project in one directory that the runtime stage copies whole,
# so neither the source tree nor pip's build leftovers end up in the final image.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# .dockerignore limits the context to what `pip install .` needs.
COPY . .
RUN pip install --no-cache-dir .


FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    BUURTALERT_HOST=0.0.0.0 \
    BUURTALERT_LOG_JSON=true \
    BUURTALERT_DATA_DIR=/tmp/buurtalert

# A fixed, unprivileged uid/gid so volume ownership and `runAsUser` in Kubernetes are predictable.
RUN groupadd --system --gid 10001 buurtalert \
 && useradd --system --uid 10001 --gid buurtalert --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin buurtalert

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

EXPOSE 8080 8081 8082

# Healthchecks live in docker-compose.yml (each service has its own port).
CMD ["python", "-m", "services.ingest"]
