from django.contrib import admin
from django.urls import include, path

from proxy import health

# The admin's "View site" link opens the dashboards; the dashboards link back to the admin.
admin.site.site_url = "/dashboards/"
admin.site.site_header = "Tollgate administration"

urlpatterns = [
    path("v1/", include("proxy.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", health.metrics, name="metrics"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("dashboards/", include("dashboards.urls")),
]
