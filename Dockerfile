# syntax=docker/dockerfile:1.7
# hello-bot image. Targets:
#   bot       (default, last stage)  python -m bot serve|migrate|...
#   operator                         the kopf operator (operator/hello_operator)
#   dev                              `skaffold dev` only: the bot plus watchfiles, code owned by
#                                    the app user so file sync can replace it (docs/development.md)
# Build: docker build -t hello-bot:0.1.0 .   |   docker build --target operator -t hello-bot-operator:0.1.0 .
# Both final stages run as uid 10001, carry no compilers, no package caches and no uv, and work
# with a read-only root filesystem (only /tmp needs to be writable; bytecode is compiled here).

ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

# ---- builder: the locked runtime venv at /app/.venv ------------------------------------------
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
COPY pyproject.toml uv.lock ./
# Dependencies only (the bot is not installed, it runs from /app); the cache lives in a BuildKit
# cache mount, never in a layer.
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --no-install-project
COPY bot/ bot/
COPY migrations/ migrations/
RUN python -m compileall -q bot migrations

# ---- catalogs: bot/locales/*/LC_MESSAGES/messages.mo compiled from the .po sources ------------
# Babel (the `i18n` group) exists only in this stage; the bot reads .mo files with the standard
# library's gettext. .dockerignore keeps a checkout's own .mo files out of the context.
FROM builder AS catalogs
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --only-group i18n --no-install-project \
    && /app/.venv/bin/pybabel compile --directory=bot/locales --domain=messages --statistics

# ---- operator-builder: the same venv plus the `operator` dependency group ----------------------
FROM builder AS operator-builder
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --group operator --no-install-project
COPY operator/hello_operator/ hello_operator/
# The bot's Pod shape comes from the Helm chart (hello_operator/pod_shape.py looks here first).
COPY charts/hello-bot/values.yaml hello_operator/chart/values.yaml
COPY charts/hello-bot/files/bot-pod.yaml hello_operator/chart/files/bot-pod.yaml
RUN python -m compileall -q hello_operator

# ---- dev-builder: the bot's venv plus the `reload` group (watchfiles) ----------------------------
FROM builder AS dev-builder
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --locked --no-dev --group reload --no-install-project

# ---- runtime-base: what the final images share -----------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime-base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONPATH=/app \
    VIRTUAL_ENV=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    HOME=/tmp
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin app
WORKDIR /app

# ---- operator ---------------------------------------------------------------------------------
FROM runtime-base AS operator
# Files stay owned by root: the process can read them, never change them.
COPY --from=operator-builder /app/.venv /app/.venv
COPY --from=operator-builder /app/hello_operator /app/hello_operator
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["kopf", "run", "--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz", "-m", "hello_operator"]

# ---- dev (skaffold dev only; never deployed to production) ----------------------------------
FROM runtime-base AS dev
COPY --from=dev-builder /app/.venv /app/.venv
COPY --from=dev-builder /app/pyproject.toml /app/uv.lock /app/
# The one relaxation file sync needs: /app/bot belongs to the app user, so `kubectl exec tar`
# (skaffold's sync) can replace files in it. Everything else stays root-owned.
COPY --from=dev-builder --chown=10001:10001 /app/bot /app/bot
COPY --from=catalogs /app/bot/locales /app/bot/locales
COPY --from=dev-builder /app/migrations /app/migrations
USER 10001:10001
EXPOSE 8080
# Same entrypoint as `bot`, so the migration Job and helm test work unchanged with this image;
# the chart's bot.hotReload runs the bot under watchfiles instead.
ENTRYPOINT ["python", "-m", "bot"]
CMD ["poll"]

# ---- bot (default target) ---------------------------------------------------------------------
FROM runtime-base AS bot
COPY --from=builder /app/.venv /app/.venv
COPY --from=builder /app/pyproject.toml /app/uv.lock /app/
COPY --from=builder /app/bot /app/bot
COPY --from=catalogs /app/bot/locales /app/bot/locales
COPY --from=builder /app/migrations /app/migrations
USER 10001:10001
EXPOSE 8080
# Exec form: python is PID 1 and receives SIGTERM itself (the bot drains, then exits).
ENTRYPOINT ["python", "-m", "bot"]
CMD ["serve"]
