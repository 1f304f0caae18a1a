FROM python:3.11-slim
# HOST: the container serves every interface, so it counts as a deployment (see gateway_project.safety).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 GATEWAY_VAR_DIR=/var/lib/tollgate HOST=0.0.0.0
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
RUN python manage.py collectstatic --noinput --verbosity 0
EXPOSE 8000
# `exec`: uvicorn itself gets `docker stop`'s SIGTERM (and hands buffered request logs on), not a shell
# that ignores it until the SIGKILL 10 s later; its graceful shutdown ends before that. Flags as `make run`'s.
CMD ["sh", "-c", "mkdir -p ${PROMETHEUS_MULTIPROC_DIR:-/tmp/prometheus} && python manage.py migrate --noinput && python manage.py gateway_config apply --if-configured && exec uvicorn gateway_project.asgi:application --host ${HOST} --port 8000 --workers ${WEB_CONCURRENCY:-2} --limit-concurrency 2048 --timeout-keep-alive 75 --timeout-graceful-shutdown 8 --loop uvloop --http httptools --no-access-log"]
