"""The Redis broker transport the workers use: kombu's, made to survive a lost connection.

On a lost broker connection Celery's consumer drops the transport's connection parameters
before it closes the old channel; closing the channel hands unacknowledged messages back to
the queue, which needs those parameters, and the AttributeError that follows is not one of
the connection errors Celery ignores there: the worker exits instead of reconnecting
(celery 5.7, kombu 5.7). Here the channel reports a connection error instead, so the
consumer carries on reconnecting; the messages stay in the broker's unacknowledged index,
from which the visibility timeout hands them out again.
"""

import redis
from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)


class Transport(kombu_redis.Transport):
    Channel = Channel
