from django.urls import path

from budgets import views as budget_views
from dashboards import views

app_name = "dashboards"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("export.csv", views.overview_export, name="overview_export"),
    path("find", views.find_request, name="find"),
    path("time-zone", views.time_zone, name="time_zone"),
    path("orgs/<slug:org_slug>/", views.org_dashboard, name="org"),
    path("orgs/<slug:org_slug>/export.csv", views.org_export, name="org_export"),
    path("orgs/<slug:org_slug>/projects/<slug:project_slug>/", views.project_dashboard, name="project"),
    path("orgs/<slug:org_slug>/projects/<slug:project_slug>/export.csv", views.project_export, name="project_export"),
    # End-user ids are whatever callers send, slashes included, hence <path:>; the export comes first.
    path("orgs/<slug:org_slug>/users/<path:user_id>/export.csv", views.user_export, name="user_export"),
    path("orgs/<slug:org_slug>/users/<path:user_id>/", views.user_dashboard, name="user"),
    path("orgs/<slug:org_slug>/budgets/", budget_views.org_budgets, name="budgets"),
    path("orgs/<slug:org_slug>/logs/", views.log_explorer, name="logs"),
    path("orgs/<slug:org_slug>/logs/<str:log_id>/", views.log_detail, name="log_detail"),
    path("orgs/<slug:org_slug>/sessions/", views.session_list, name="sessions"),
    # Thread ids are whatever callers send, slashes included.
    path("orgs/<slug:org_slug>/sessions/<path:thread_id>/", views.session_detail, name="session"),
]
