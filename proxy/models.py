import hashlib
import re
import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from gateway_project import crypto
from proxy.providers.registry import PROVIDER_CHOICES

GATEWAY_KEY_PREFIX = "tg-"
# `secrets.token_urlsafe(32)`: 32 random bytes as 43 base64url characters.
GATEWAY_KEY_PATTERN = re.compile(re.escape(GATEWAY_KEY_PREFIX) + r"[A-Za-z0-9_-]{43}")
# How a change made in admin reaches the gateway, for the help texts.
APPLIES_AT_ONCE = "Applies to the next request in every gateway process."


_FIELD_LABELS = {"org": "organisation"}


class TenantKeyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        fixed = sorted(set(kwargs) & {*self.model.tenant_key_fields, *self.model._tenant_key_attnames()})
        if fixed:
            raise ValidationError(f"{', '.join(fixed)} cannot change once created: logs and rollups are kept under it.")
        return super().update(**kwargs)


class TenantKeyFields(models.Model):
    """Fields that key a tenant's logs and rollups, fixed once the row exists.

    Request logs and rollups store the org's and project's slugs, not their ids: renaming
    `globex` and creating a new `globex` would hand the old logs to the new owner.
    """

    tenant_key_fields: tuple[str, ...] = ()

    objects = TenantKeyQuerySet.as_manager()

    class Meta:
        abstract = True

    def save(self, *args, **kwargs):
        self._refuse_tenant_key_changes()
        super().save(*args, **kwargs)
        self._stored_tenant_key = {
            self._meta.get_field(name).attname: getattr(self, self._meta.get_field(name).attname)
            for name in self.tenant_key_fields
        }

    def clean(self):
        super().clean()
        self._refuse_tenant_key_changes()

    @classmethod
    def from_db(cls, db, field_names, values):
        instance = super().from_db(db, field_names, values)
        keys = cls._tenant_key_attnames()
        instance._stored_tenant_key = {
            name: value
            for name, value in zip(field_names, values, strict=True)
            if name in keys and value is not models.DEFERRED
        }
        return instance

    @classmethod
    def _tenant_key_attnames(cls) -> set[str]:
        return {cls._meta.get_field(name).attname for name in cls.tenant_key_fields}

    def tenant_key_changes(self) -> list[str]:
        """The tenant-key fields whose value differs from the stored row (none for a new row)."""
        stored = getattr(self, "_stored_tenant_key", None)
        if self._state.adding or stored is None:
            return []
        changed = []
        for name in self.tenant_key_fields:
            attname = self._meta.get_field(name).attname
            if attname in stored and getattr(self, attname) != stored[attname]:
                changed.append(name)
        return changed

    def _refuse_tenant_key_changes(self) -> None:
        changed = self.tenant_key_changes()
        if changed:
            raise ValidationError(
                {
                    name: f"The {_FIELD_LABELS.get(name, name)} cannot change once created: "
                    "logs and rollups are kept under it."
                    for name in changed
                }
            )


class Organisation(TenantKeyFields):
    """A tenant. Its `slug` is what callers send as `x-organisation-id`."""

    tenant_key_fields = ("slug",)

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.name or self.slug


class Project(TenantKeyFields):
    tenant_key_fields = ("org", "slug")

    class ContentLogging(models.TextChoices):
        FULL = "full", "Store full content"
        METADATA = "metadata", "Metadata only (no message contents or response text)"

    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="projects")
    slug = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    content_logging = models.CharField(
        max_length=16, choices=ContentLogging.choices, default=ContentLogging.FULL, help_text=APPLIES_AT_ONCE
    )
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


def looks_like_gateway_key(plaintext: str) -> bool:
    """Whether a presented key could be one this gateway issued; anything else needs no lookup."""
    return GATEWAY_KEY_PATTERN.fullmatch(plaintext) is not None


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
    name = models.CharField(max_length=200, blank=True, help_text="A label, to tell keys apart.")
    prefix = models.CharField(max_length=16, editable=False, help_text="The first characters, to tell keys apart.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="The key stops working at this time; leave empty for a key that never expires."
    )
    revoked_at = models.DateTimeField(null=True, blank=True, help_text=APPLIES_AT_ONCE)
    last_used_at = models.DateTimeField(
        null=True, blank=True, editable=False, help_text="Updated at most once a minute, so it may lag by a minute."
    )

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
        return self.revoked_at is None and not self.is_expired

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()


class EncryptedApiKey:
    """`api_key` in clear for code that needs it, stored only encrypted in `api_key_encrypted`."""

    @property
    def api_key(self) -> str:
        return crypto.decrypt(self.api_key_encrypted) if self.api_key_encrypted else ""

    @api_key.setter
    def api_key(self, plaintext: str) -> None:
        self.api_key_encrypted = crypto.encrypt(plaintext) if plaintext else ""


class ProviderCredential(EncryptedApiKey, models.Model):
    """An org's own key (and optionally base URL) for one provider, encrypted at rest."""

    org = models.ForeignKey(Organisation, on_delete=models.CASCADE, related_name="provider_credentials")
    provider = models.CharField(max_length=32, choices=PROVIDER_CHOICES)
    api_key_encrypted = models.TextField(editable=False)
    base_url = models.URLField("Base URL", blank=True, help_text="Overrides the provider's base URL for this org.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["org", "provider"], name="provider_credential_unique")]

    def __str__(self):
        return f"{self.org.slug}: {self.provider}"


class ModelRoute(models.Model):
    """Sends requests for `model_name` to a provider, optionally under another model name."""

    model_name = models.CharField(max_length=200, unique=True)
    provider = models.CharField(max_length=32, choices=PROVIDER_CHOICES)
    upstream_model = models.CharField(max_length=200, blank=True, help_text="Empty: forward the model name unchanged.")

    class Meta:
        ordering = ["model_name"]

    def __str__(self):
        return f"{self.model_name} → {self.provider}/{self.upstream_model or self.model_name}"


class ModelGroup(models.Model):
    """A model name callers send, served by a group of deployments, with its retry and cooldown policy.

    A group with an org serves that org only and wins over a shared group (no org) of the same name.
    """

    class Strategy(models.TextChoices):
        WEIGHTED = "weighted", "Weighted random"
        LEAST_BUSY = "least-busy", "Least busy (fewest requests in flight)"
        LATENCY = "latency", "Lowest recent latency"

    org = models.ForeignKey(
        Organisation,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="model_groups",
        help_text="Leave empty for a group every org may use.",
    )
    name = models.CharField(max_length=200, help_text="The model name callers send.")
    strategy = models.CharField(max_length=16, choices=Strategy.choices, default=Strategy.WEIGHTED)
    num_retries = models.PositiveSmallIntegerField(
        default=2, help_text="Further attempts after the first, on connect errors, timeouts, 429 and 5xx."
    )
    allowed_fails = models.PositiveSmallIntegerField(
        default=3, help_text="Failures of one deployment within the cooldown time that put it in cooldown."
    )
    cooldown_seconds = models.PositiveIntegerField(default=60)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["org", "name"], name="model_group_name_unique_in_org"),
            models.UniqueConstraint(
                fields=["name"], condition=models.Q(org__isnull=True), name="shared_model_group_name_unique"
            ),
        ]

    def __str__(self):
        return f"{self.org.slug}: {self.name}" if self.org_id else self.name


class Deployment(EncryptedApiKey, models.Model):
    """One upstream serving a model group: a provider, where it lives, its key and its model name there."""

    group = models.ForeignKey(ModelGroup, on_delete=models.CASCADE, related_name="deployments")
    name = models.SlugField(max_length=100, help_text="Names the deployment in logs and dashboards.")
    provider = models.CharField(max_length=32, choices=PROVIDER_CHOICES)
    base_url = models.URLField("Base URL", blank=True, help_text="Empty: the provider's configured base URL.")
    api_key_encrypted = models.TextField(blank=True, editable=False)
    api_key_env = models.CharField(
        "API key variable",
        max_length=100,
        blank=True,
        help_text="Read the key from this environment variable instead of storing it.",
    )
    upstream_model = models.CharField(max_length=200, help_text="The model name sent to the provider.")
    weight = models.PositiveIntegerField(default=1)
    rpm = models.PositiveIntegerField("Requests per minute", null=True, blank=True)
    tpm = models.PositiveIntegerField("Tokens per minute", null=True, blank=True)
    max_output_tokens = models.PositiveIntegerField(
        "Most output tokens",
        null=True,
        blank=True,
        validators=[MinValueValidator(1)],
        help_text="The most tokens the model answers with; a budget reserves this much output for a request "
        "without max_tokens. Empty: GATEWAY_BUDGET_DEFAULT_OUTPUT_TOKENS.",
    )
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ["group__name", "name"]
        constraints = [models.UniqueConstraint(fields=["group", "name"], name="deployment_name_unique_in_group")]

    def __str__(self):
        return f"{self.group.name}/{self.name} → {self.provider}/{self.upstream_model}"


class Fallback(models.Model):
    """Where a model group's requests go, in order, when every deployment of the group failed."""

    class Trigger(models.TextChoices):
        FAILURE = "failure", "Any failure (connect errors, timeouts, 429, 5xx)"
        CONTEXT_WINDOW = "context_window", "Context window exceeded"
        CONTENT_POLICY = "content_policy", "Content policy refusal"

    group = models.ForeignKey(ModelGroup, on_delete=models.CASCADE, related_name="fallbacks")
    trigger = models.CharField(max_length=16, choices=Trigger.choices, default=Trigger.FAILURE)
    to_group = models.ForeignKey(ModelGroup, on_delete=models.CASCADE, related_name="+")
    position = models.PositiveSmallIntegerField(default=0)

    class Meta:
        ordering = ["group", "trigger", "position"]
        constraints = [
            models.UniqueConstraint(fields=["group", "trigger", "to_group"], name="fallback_unique"),
        ]

    def __str__(self):
        return f"{self.group.name} → {self.to_group.name} ({self.trigger})"
