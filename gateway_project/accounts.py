"""Account pages that need more care than django.contrib.auth's defaults."""

from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth.views import PasswordResetView
from django.http import Http404
from django.views.generic.edit import FormView


class TrustedHostPasswordResetView(PasswordResetView):
    """Reset links point at GATEWAY_PUBLIC_URL, never at the request's Host header.

    Django's view builds the link from the Host the request claims, so a forged Host would
    mail the victim a link to the forger's server. Without GATEWAY_PUBLIC_URL there is no reset page.
    """

    def dispatch(self, request, *args, **kwargs):
        if not settings.GATEWAY_PUBLIC_URL:
            raise Http404("Password reset needs GATEWAY_PUBLIC_URL")
        return super().dispatch(request, *args, **kwargs)

    def form_valid(self, form):
        public = urlsplit(settings.GATEWAY_PUBLIC_URL)
        form.save(
            domain_override=public.netloc,
            use_https=public.scheme == "https",
            token_generator=self.token_generator,
            from_email=self.from_email,
            email_template_name=self.email_template_name,
            subject_template_name=self.subject_template_name,
            request=self.request,
            html_email_template_name=self.html_email_template_name,
            extra_email_context=self.extra_email_context,
        )
        # PasswordResetView.form_valid would send the mail a second time, built from the Host header.
        return FormView.form_valid(self, form)
