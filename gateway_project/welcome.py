"""The summary `make run` prints once the gateway answers: where things are and what to do next."""

from __future__ import annotations

from django.conf import settings

from dashboards.selectors import demo_org_slugs
from proxy.providers.configuration import configuration_notes


def welcome_lines(*, url: str) -> list[str]:
    url = url.rstrip("/")
    lines = [
        "",
        f"Tollgate is up on {url} (Ctrl-C stops it)",
        f"  OpenAI SDK base_url     {url}/v1",
        f"  Anthropic SDK base_url  {url}",
        f"  Dashboards              {url}/dashboards/",
        f"  Admin                   {url}/admin/",
        "  A login for both        make superuser",
        "  A gateway key           make key ORG=acme PROJECT=search   (the SDK's api_key)",
    ]
    demo = demo_org_slugs()
    if demo:
        lines.append(f"  Demo data               {', '.join(demo)} (`python manage.py remove_demo_data` removes it)")
    lines += configuration_notes(default_provider=settings.GATEWAY_DEFAULT_PROVIDER)
    return [*lines, ""]
