import os
import zlib

import orjson
from celery import Celery
from celery.signals import beat_init, worker_init
from kombu import compression
from kombu.serialization import register

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

# Export tasks carry whole batches of request logs; orjson encodes them several times
# faster than the standard library, and the web process pays for that encoding. Its bytes
# go to the compressor as they are ("binary": no round trip through str); workers decode
# bytes and the str of messages published as "utf-8" alike.
register("orjson", orjson.dumps, orjson.loads, content_type="application/x-orjson", content_encoding="binary")

# Export batches are repetitive JSON: zlib at its fastest level shrinks them about fivefold, which
# the web process pays back in fewer bytes to frame and push to the broker.
compression.register(
    lambda body: zlib.compress(body, 1), zlib.decompress, "application/x-zlib-fast", aliases=["zlib-fast"]
)

app = Celery("tollgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
@beat_init.connect
def _refuse_unsafe_defaults(**kwargs) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from gateway_project.safety import refuse_unsafe_defaults

    try:
        refuse_unsafe_defaults()
    except ImproperlyConfigured as exc:
        # Celery logs and ignores exceptions from signal handlers; SystemExit stops the worker.
        raise SystemExit(str(exc)) from exc
