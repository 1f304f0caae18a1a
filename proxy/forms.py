"""Admin forms for gateway keys and provider credentials, whose secrets never round-trip to the browser."""

from django import forms
from django.conf import settings
from django.utils import timezone

from proxy.models import GatewayKey, Project, ProviderCredential


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
