"""Number formatting for the dashboards (django.contrib.humanize is not installed), and the number
cells of breakdown rows."""

from decimal import Decimal
from html import escape

from django import template
from django.utils.safestring import mark_safe

register = template.Library()
EMPTY = "\N{EN DASH}"
SMALL_AMOUNT_DIGITS = 3


@register.filter
def usd(value) -> str:
    if value in (None, ""):
        return EMPTY
    amount = Decimal(value)
    # Sub-cent amounts are common per request: three significant digits rather than "$0.00"
    # (or "$0.0000" for a millionth of a dollar).
    if amount and abs(amount) < Decimal("0.01"):
        places = SMALL_AMOUNT_DIGITS - 1 - amount.adjusted()
        return f"${amount:.{places}f}".rstrip("0")
    return f"${amount:,.2f}"


@register.filter
def number(value) -> str:
    if value in (None, ""):
        return EMPTY
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


@register.filter
def ms(value) -> str:
    if value is None:
        return EMPTY
    if value >= 10_000:
        return f"{value / 1000:,.1f} s"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    return f"{value:.0f} ms"


@register.filter
def percent(value) -> str:
    if value is None:
        return EMPTY
    return f"{value * 100:.2f}%"


# (data-col, UsageStats attribute, filter) of the cells after the errors, which link to the row's page.
_LINKED_CELLS = (
    ("", "error_rate", percent),
    ("input_tokens", "input_tokens", number),
    ("output_tokens", "output_tokens", number),
    ("cache_read_tokens", "cache_read_tokens", number),
    ("cost", "cost", usd),
    ("", "latency_p50", ms),
    ("", "latency_p95", ms),
    ("", "latency_p99", ms),
    ("", "ttfb_avg", ms),
)


def _cell(text: str, link: str | None, column: str = "") -> str:
    # Plain strings and the escaping Django's templates use: format_html per cell costs as
    # much as the tags it replaces.
    attributes = f' data-col="{column}"' if column else ""
    if link:
        return f'<td class="num"{attributes}><a href="{escape(link)}">{escape(text)}</a></td>'
    return f'<td class="num"{attributes}>{escape(text)}</td>'


@register.simple_tag
def breakdown_cells(row):
    """The number cells of a breakdown row (a `dashboards.pages.BreakdownRow`).

    Built here rather than with template tags: a page has a hundred such rows of ten cells, and
    rendering them tag by tag took longer than reading the numbers.
    """
    stats = row.stats
    page = row.url or row.logs_url
    cells = [
        _cell(number(stats.requests), row.logs_url or row.url, "requests"),
        _cell(number(stats.errors), row.errors_url if row.logs_url else None, "errors"),
        *(_cell(show(getattr(stats, name)), page, column) for column, name, show in _LINKED_CELLS),
    ]
    return mark_safe("\n        ".join(cells))
