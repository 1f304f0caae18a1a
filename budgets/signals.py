"""A saved or deleted budget or limit applies to the next request in every process (see proxy.invalidation)."""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from budgets.models import Budget, RateLimit
from budgets.plans import TOPIC
from proxy import invalidation


@receiver([post_save, post_delete], sender=Budget)
@receiver([post_save, post_delete], sender=RateLimit)
def _limits_changed(sender, instance, **kwargs):
    invalidation.announce(TOPIC)
