"""Database work off the event loop, on one dedicated thread.

The hot path reads the database only on cache misses, so one thread is enough,
and owning it lets a shutdown close exactly the connection that thread opened.
"""

from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connections

_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gateway-db")


def _fresh(fn):
    def call(*args, **kwargs):
        # No request_started/finished signals reach this thread, so stale connections are recycled here.
        close_old_connections()
        return fn(*args, **kwargs)

    return call


async def run_in_db_thread(fn, *args, **kwargs):
    return await sync_to_async(_fresh(fn), thread_sensitive=False, executor=_executor)(*args, **kwargs)


def close_db_connections() -> None:
    _executor.submit(connections.close_all).result(timeout=10)
