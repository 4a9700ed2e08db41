"""``reconciliation.html``: the run's reconciliation as one self-contained page.

Rendered with Jinja2 from ``reports/reconciliation.html.j2`` (shipped data, so a site can
restyle it). The page has no scripts, external fonts, stylesheets or images: CSS is
inline, charts are inline SVG, and a Content-Security-Policy meta tag forbids loading
anything else, so it opens offline and a stray external reference shows up as a console
error in the browser test. NHS numbers are shown 3-3-4 (``display``). Autoescaping is
on; only the SVG charts (made here, from numbers) are marked safe.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jinja2
from markupsafe import Markup

from migrate.reports import display
from migrate.resources import reports_dir

TEMPLATE = "reconciliation.html.j2"
LIST_CAP = 100  # ids shown per list on the page; reconciliation.json has them all


def number(value: Any) -> str:
    """Thousands separators for whole numbers; a dash for missing values."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def signed(value: Any) -> str:
    """A difference with its sign (+3, −2, 0)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return number(value)
    return f"+{value:,}" if value > 0 else (f"−{-value:,}" if value < 0 else "0")


def sentence(value: Any) -> str:
    """First letter upper case, the rest untouched (Jinja's capitalize lowers "FHIR")."""
    text = "" if value is None else str(value)
    return text[:1].upper() + text[1:]


def short(value: Any, length: int = 12) -> str:
    """The start of a hash, enough to tell two apart on a page."""
    text = "" if value is None else str(value)
    return text if len(text) <= length else text[:length] + "…"


def environment() -> jinja2.Environment:
    """The Jinja2 environment of the shipped report templates (strict: a missing key fails)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(reports_dir()), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True,
    )
    env.filters |= {"n": number, "signed": signed, "short": short, "sentence": sentence,
                    "nhs": display.nhs_number, "nhs_text": display.nhs_numbers_in_text}
    env.globals["cap"] = LIST_CAP
    return env


def render_html(summary: Mapping[str, Any], charts: Mapping[str, str]) -> str:
    """The page for ``summary`` (as in reconciliation.json) with ``charts`` (inline SVG by name)."""
    template = environment().get_template(TEMPLATE)
    return template.render(s=summary, charts={name: Markup(svg) for name, svg in charts.items()})
