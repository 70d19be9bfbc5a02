# One image for every role of provider-jobs; the command picks the role:
#   worker    dramatiq provider_jobs.worker --processes 2 --threads 8   (default)
#   archiver  provider-jobs archiver
#   api       provider-jobs api
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
# Every extra: the image runs every role (see the README's extras).
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[all]'

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PROVIDER_JOBS_LOG_FORMAT=json \
    PROVIDER_JOBS_API_HOST=0.0.0.0 \
    PROVIDER_JOBS_ARCHIVE_URL=sqlite:////var/lib/provider-jobs/archive.sqlite3 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/provider-jobs-metrics
RUN groupadd --system --gid 10001 provider-jobs \
 && useradd --system --uid 10001 --gid provider-jobs --home-dir /nonexistent --shell /usr/sbin/nologin provider-jobs \
 && install -d -o provider-jobs -g provider-jobs /var/lib/provider-jobs /tmp/provider-jobs-metrics
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'provider-jobs[all]' && rm -rf /wheels
USER 10001:10001
WORKDIR /var/lib/provider-jobs
VOLUME ["/var/lib/provider-jobs"]
# 8001: the API; 9191: a worker's /metrics (PROVIDER_JOBS_METRICS_PORT).
EXPOSE 8001 9191
CMD ["dramatiq", "provider_jobs.worker", "--processes", "2", "--threads", "8"]
