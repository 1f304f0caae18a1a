import os
import zlib

import orjson
from celery import Celery
from kombu import compression
from kombu.serialization import register

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gateway_project.settings")

# Export tasks carry whole batches of request logs; orjson encodes them several times
# faster than the standard library, and the web process pays for that encoding.
register(
    "orjson",
    lambda payload: orjson.dumps(payload).decode(),
    orjson.loads,
    content_type="application/x-orjson",
    content_encoding="utf-8",
)

# Export batches are repetitive JSON: zlib at its fastest level shrinks them about fivefold, which
# the web process pays back in fewer bytes to frame and push to the broker.
compression.register(
    lambda body: zlib.compress(body, 1), zlib.decompress, "application/x-zlib-fast", aliases=["zlib-fast"]
)

app = Celery("tollgate")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
