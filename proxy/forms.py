"""Admin forms for gateway keys and provider credentials, whose secrets never round-trip to the browser."""

from django import forms

from proxy.models import GatewayKey, ProviderCredential


class GatewayKeyIssueForm(forms.ModelForm):
    """Asks only for the key's scope and label; the key itself is generated on save."""

    class Meta:
        model = GatewayKey
        fields = ("org", "project", "name")

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
