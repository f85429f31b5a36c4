# The worker, the read API and the migrations in one image: `cdc-worker run|api|migrate`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md requirements.lock ./
COPY cdc_worker ./cdc_worker
COPY projections ./projections
# Pinned like `make`: every version from requirements.lock. cryptography (pinned there too):
# PyMySQL needs it for MySQL 8.4's default caching_sha2_password over plain TCP.
RUN pip install -c requirements.lock . cryptography && rm -rf build *.egg-info

# `cdc-worker migrate` finds alembic.ini and migrations/ in the working directory.
COPY alembic.ini ./
COPY migrations ./migrations

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin cdc
USER cdc

ENTRYPOINT ["cdc-worker"]
CMD ["--help"]
