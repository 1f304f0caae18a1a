import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from gateway_project import crypto
from proxy.providers.registry import PROVIDER_CHOICES

GATEWAY_KEY_PREFIX = "tg-"


class Organisation(models.Model):
    """A tenant. Its `slug` is what callers send as `x-organisation-id`."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.name or self.slug


class Project(models.Model):
    class ContentLogging(models.TextChoices):
        FULL = "full", "Store full content"
        METADATA = "metadata", "Metadata only (no message contents or response text)"

    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="projects")
    slug = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    content_logging = models.CharField(max_length=16, choices=ContentLogging.choices, default=ContentLogging.FULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["org__slug", "slug"]
        constraints = [models.UniqueConstraint(fields=["org", "slug"], name="project_slug_unique_in_org")]

    def __str__(self):
        return f"{self.org.slug}/{self.slug}"


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "user"], name="membership_unique")]

    def __str__(self):
        return f"{self.user} in {self.org.slug} ({self.role})"


def hash_gateway_key(plaintext: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough and keeps lookups cheap.
    return hashlib.sha256(plaintext.encode()).hexdigest()


class GatewayKeyQuerySet(models.QuerySet):
    def active(self):
        return self.filter(revoked_at__isnull=True)


class GatewayKey(models.Model):
    """A caller's credential. Only its hash is stored; the plaintext is shown once."""

    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="keys")
    project = models.ForeignKey(
        Project,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="keys",
        help_text="Pin the key to one project; leave empty for an org-wide key.",
    )
    name = models.CharField(max_length=200, blank=True)
    prefix = models.CharField(max_length=16, editable=False, help_text="The first characters, to tell keys apart.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = GatewayKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.prefix}… ({self.org.slug})"

    @staticmethod
    def generate_plaintext() -> str:
        return GATEWAY_KEY_PREFIX + secrets.token_urlsafe(32)

    def set_plaintext(self, plaintext: str) -> None:
        self.prefix = plaintext[:10]
        self.key_hash = hash_gateway_key(plaintext)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class ProviderCredential(models.Model):
    """An org's own key (and optionally base URL) for one provider, encrypted at rest."""

    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="provider_credentials")
    provider = models.CharField(max_length=32, choices=PROVIDER_CHOICES)
    api_key_encrypted = models.TextField(editable=False)
    base_url = models.URLField(blank=True, help_text="Overrides the provider's base URL for this org.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "provider"], name="provider_credential_unique")]

    def __str__(self):
        return f"{self.org.slug}: {self.provider}"

    @property
    def api_key(self) -> str:
        return crypto.decrypt(self.api_key_encrypted) if self.api_key_encrypted else ""

    @api_key.setter
    def api_key(self, plaintext: str) -> None:
        self.api_key_encrypted = crypto.encrypt(plaintext)


class ModelRoute(models.Model):
    """Sends requests for `model_name` to a provider, optionally under another model name."""

    model_name = models.CharField(max_length=200, unique=True)
    provider = models.CharField(max_length=32, choices=PROVIDER_CHOICES)
    upstream_model = models.CharField(max_length=200, blank=True, help_text="Empty: forward the model name unchanged.")

    class Meta:
        ordering = ["model_name"]

    def __str__(self):
        return f"{self.model_name} → {self.provider}/{self.upstream_model or self.model_name}"
