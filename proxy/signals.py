"""Announces changes to what the gateway caches, however they are saved (admin, services, shell).

See `proxy.invalidation`: every process forgets the changed entries, so the change
applies to the next request rather than after the caches' TTL.
"""

from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from proxy import credentials, invalidation, routing
from proxy.models import (
    Deployment,
    Fallback,
    GatewayKey,
    ModelGroup,
    ModelRoute,
    Organisation,
    Project,
    ProviderCredential,
)
from proxy.router import groups
from telemetry import pricing
from telemetry.models import PriceOverride


@receiver([post_save, post_delete], sender=GatewayKey)
def _key_changed(sender, instance, **kwargs):
    invalidation.announce("key", instance.key_hash)


@receiver([post_save, post_delete], sender=Project)
@receiver([post_save, post_delete], sender=Organisation)
def _tenancy_changed(sender, instance, **kwargs):
    invalidation.announce("tenancy")


@receiver([post_save, post_delete], sender=ProviderCredential)
def _credential_changed(sender, instance, **kwargs):
    invalidation.announce("credentials")


@receiver([post_save, post_delete], sender=ModelRoute)
def _route_changed(sender, instance, **kwargs):
    invalidation.announce("routes")


@receiver([post_save, post_delete], sender=Fallback)
@receiver([post_save, post_delete], sender=Deployment)
@receiver([post_save, post_delete], sender=ModelGroup)
def _model_group_changed(sender, instance, **kwargs):
    invalidation.announce("model_groups")


@receiver([post_save, post_delete], sender=PriceOverride)
def _price_changed(sender, instance, **kwargs):
    invalidation.announce("prices")


def _forget_credentials_routes_and_prices(topic: str, value: str) -> None:
    if topic in ("credentials", invalidation.EVERYTHING):
        credentials.forget_credentials()
    if topic in ("routes", invalidation.EVERYTHING):
        routing.forget_routes()
    if topic in ("model_groups", invalidation.EVERYTHING):
        groups.forget_groups()
    if topic in ("prices", invalidation.EVERYTHING):
        pricing.invalidate_overrides()


invalidation.on_invalidation(_forget_credentials_routes_and_prices)
