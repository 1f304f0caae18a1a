from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from gateway_project.accounts import TrustedHostPasswordResetView
from proxy import health

# The admin's "View site" link opens the dashboards; the dashboards link back to the admin.
admin.site.site_url = "/dashboards/"
admin.site.site_header = "Tollgate administration"

urlpatterns = [
    # A browser pointed at the gateway lands on the dashboards (which send it to log in first).
    path("", RedirectView.as_view(pattern_name="dashboards:overview"), name="home"),
    path("v1/", include("proxy.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    # Before django.contrib.auth's own, which would build reset links from the Host header.
    path("accounts/password_reset/", TrustedHostPasswordResetView.as_view(), name="password_reset"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("dashboards/", include("dashboards.urls")),
]
