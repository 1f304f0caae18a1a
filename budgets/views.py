"""The budgets page of an org's dashboards: use and remaining amount of each budget, and refusals by limit."""

from django.contrib.auth.decorators import login_required
from django.shortcuts import render
from django.views.decorators.http import require_GET

from budgets import selectors
from dashboards import access

_DAYS = (1, 7, 30)


@require_GET
@login_required
def org_budgets(request, org_slug):
    org = access.org_for_user(user=request.user, org_slug=org_slug)
    days = int(request.GET["days"]) if request.GET.get("days") in {str(d) for d in _DAYS} else 7
    context = {
        "org": org,
        "uses": selectors.budget_usage(org=org),
        "limits": selectors.rate_limits(org=org),
        "refusals": selectors.refusals_by_limit(org=org, days=days),
        "days": days,
        "day_choices": _DAYS,
    }
    return render(request, "budgets/org_budgets.html", context)
