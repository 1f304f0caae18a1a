"""Admin forms for gateway keys, provider credentials and deployments, whose secrets never round-trip to the browser."""

from django import forms
from django.conf import settings
from django.utils import timezone

from proxy.models import Deployment, GatewayKey, Project, ProviderCredential


class ProjectSelect(forms.Select):
    """Each option names its project's org, so that the page can offer only the chosen org's projects."""

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        instance = getattr(value, "instance", None)
        if instance is not None:
            option["attrs"]["data-org"] = str(instance.org_id)
        return option


class GatewayKeyIssueForm(forms.ModelForm):
    """Asks only for the key's scope, label and expiry; the key itself is generated on save."""

    class Meta:
        model = GatewayKey
        fields = ("org", "project", "name", "expires_at")
        widgets = {"project": ProjectSelect}
        help_texts = {
            "expires_at": f"In {settings.TIME_ZONE}. The key stops working at this time; "
            "leave empty for a key that never expires."
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        project = self.fields["project"]
        project.queryset = Project.objects.select_related("org").order_by("org__slug", "slug")
        org = self.initial.get("org")
        if not self.is_bound and org:
            # The add page opened for one org (?org=<id>) lists only that org's projects.
            project.queryset = project.queryset.filter(org_id=getattr(org, "pk", org))

    def clean_expires_at(self):
        expires_at = self.cleaned_data["expires_at"]
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("Choose a time in the future, or leave it empty for a key that never expires.")
        return expires_at

    def clean(self):
        cleaned = super().clean()
        org, project = cleaned.get("org"), cleaned.get("project")
        if org is not None and project is not None and project.org_id != org.pk:
            self.add_error("project", "Choose a project of the selected organisation, or leave it empty.")
        return cleaned


class ProviderCredentialForm(forms.ModelForm):
    """The API key is write-only: it is never rendered back, and a blank entry on change keeps the stored key."""

    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again. Leave blank to keep the current key.",
    )

    class Meta:
        model = ProviderCredential
        fields = ("org", "provider", "api_key", "base_url")

    def clean_api_key(self):
        api_key = self.cleaned_data["api_key"]
        if not api_key and self.instance.pk is None:
            raise forms.ValidationError("Enter the provider's API key.")
        return api_key


class DeploymentForm(forms.ModelForm):
    """A deployment's API key is write-only, like a credential's; blank keeps the stored key.

    A deployment may have no key of its own: it then uses `api_key_env`, or the org's credential
    and the deployment-wide key for its provider (those only where it has no base URL of its own).
    """

    api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Stored encrypted and never shown again. Leave blank to keep the current key.",
    )
    clear_api_key = forms.BooleanField(label="Remove the stored key", required=False)

    class Meta:
        model = Deployment
        fields = (
            "name",
            "provider",
            "base_url",
            "api_key",
            "clear_api_key",
            "api_key_env",
            "upstream_model",
            "weight",
            "rpm",
            "tpm",
            "max_output_tokens",
            "enabled",
        )

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("api_key") and cleaned.get("clear_api_key"):
            self.add_error("clear_api_key", "Enter a new key or remove the stored one, not both.")
        return cleaned

    def save(self, commit=True):
        deployment = super().save(commit=False)
        if self.cleaned_data.get("api_key"):
            deployment.api_key = self.cleaned_data["api_key"]
        elif self.cleaned_data.get("clear_api_key"):
            deployment.api_key = ""
        if commit:
            deployment.save()
        return deployment
