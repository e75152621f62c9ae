"""The site-local report page as a Jinja2 template source, and its rendering (every value autoescaped).

The template is a Python string constant, not an .html or .j2 file, because this package travels in the Flower app
bundle (FAB), which carries only .py, .toml, .md, .yaml, .yml, .json and .jsonl files
(flwr.common.constant.FAB_INCLUDE_PATTERNS): a template file would be missing wherever the app is installed from it.
"""

from functools import cache

from jinja2 import DictLoader, Environment, StrictUndefined

from models.shared.wire import METRICS, region_key

STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; margin: 2em auto; max-width: 1150px; padding: 0 1.5em;
       font-size: 14px; color: #1a1a1a; }
table { border-collapse: collapse; margin: 0.8em 0; } th, td { border: 1px solid #c8c8c8; padding: 0.25em 0.5em;
text-align: right; font-size: 0.92em; } th { background: #eef3f8; }
td.case { text-align: left; font-weight: 600; white-space: nowrap; }
.local { background: #fff6e8; border: 1px solid #e0b070; padding: 0.6em 0.9em; } img { max-width: 100%; }
code { font-size: 0.9em; } @media print { .case-figure { break-inside: avoid; } }
"""

PAGE = (
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Site report: {{ header.site }}</title><style>{% raw %}"""
    + STYLE
    + """{% endraw %}</style></head><body>
<h1>Site validation report: {{ header.site }}</h1>
<p class="local">This report names cases and shows their images. It was written only into this site's work folder
and is never sent to the coordinator.</p>
<ul>
{% for key, value in header.items() %}
<li>{{ key }}: <code>{{ value }}</code></li>
{% endfor %}
</ul><h2>Cases, worst first</h2><p>Metrics on each case's native grid, per region: Dice, HD95 (mm), surface Dice
(nsd), absolute volume difference (avd, mL), sensitivity, precision, lesions found/labelled and false lesions.
Overlays on the evaluation grid (RAS, isotropic): label solid, prediction dashed.</p>
<table><tr><th>#</th><th>Case</th><th>mean Dice</th>{% for region in regions %}<th>{{ region|upper }}</th>{% endfor %}
<th>voxel (mm)</th></tr>
{% for case in cases %}
{% if case.metrics is none %}
<tr><td>{{ case.rank }}</td><td class="case">{{ case.case_id }}</td>
<td colspan="{{ regions|length + 2 }}">not validated: {{ case.problem }}</td></tr>
{% else %}
<tr><td>{{ case.rank }}</td><td class="case"><a href="#case-{{ case.rank }}">{{ case.case_id }}</a></td>
<td>{{ case.mean_dice|num(3) }}</td>
{% for region in regions %}
{% set found, missed = case.metrics[region_key("lesions-tp", region)], case.metrics[region_key("lesions-fn", region)] %}
<td>
{%- for name in METRICS %}{{ name }} {{ case.metrics[region_key(name, region)]|num(digits.get(name, 3)) }}
{{- " · " if not loop.last else "" }}{% endfor -%}
<br><small>lesions {{ found|num(0) }}/{{ (found + missed)|num(0) }}, false
{{ case.metrics[region_key("lesions-fp", region)]|num(0) }}</small></td>
{% endfor %}
<td>{{ case.spacing_mm|map("g")|join("×") }}</td></tr>
{% endif %}
{% endfor %}
</table>
<h2>Overlays</h2>
{% for case in cases if case.metrics is not none %}
<div class="case-figure" id="case-{{ case.rank }}"><h3>{{ case.rank }}. {{ case.case_id }}</h3>
<img alt="{{ case.case_id }} overlays" src="{{ case.overlay }}"></div>
{% endfor %}
<h2>Metric settings</h2><ul>
{% for key, value in settings.items() %}
<li>{{ key }}: <code>{{ value }}</code></li>
{% endfor %}
</ul></body></html>
"""
)


def render_site_page(page: dict) -> str:
    """The page of site_report.site_page's dict: header, regions, cases (worst first), metric settings."""
    return _environment().get_template("site-report.html").render(**page)


@cache
def _environment() -> Environment:
    environment = Environment(
        loader=DictLoader({"site-report.html": PAGE}),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters.update(num=lambda value, digits: f"{value:.{digits}f}", g=lambda value: f"{value:g}")
    environment.globals.update(METRICS=METRICS, region_key=region_key)
    return environment
