"""The federation report page as Jinja2 template sources (loaded with DictLoader; rendered by html_page).

The templates are Python string constants, not .html or .j2 files, because the ServerApp writes the report from
inside a Flower app bundle (FAB) and a FAB carries only .py, .toml, .md, .yaml, .yml, .json and .jsonl files
(flwr.common.constant.FAB_INCLUDE_PATTERNS): a template file would be missing at the coordinator.

Every value is autoescaped; the page itself (markup, CSS, captions, methods text) lives only here. The page has no
script and no external resource: CSS inline, charts as base64 PNG data URIs.
"""

from jinja2 import DictLoader, Environment, StrictUndefined

from server_app.report.cross_site_template import CROSS_SITE, FEDERATION_HELP
from server_app.report.methods_template import METHODS

STYLE = """
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; color: #1a1a1a; margin: 2em auto;
       max-width: 1100px; padding: 0 1.5em; font-size: 14px; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #0072B2; padding-bottom: 0.15em;
margin-top: 1.8em; } h3 { margin-bottom: 0.3em; }
.meta { color: #555; } table { border-collapse: collapse; margin: 0.6em 0 1em; }
th, td { border: 1px solid #c8c8c8; padding: 0.3em 0.55em; text-align: right; vertical-align: top; }
th { background: #eef3f8; } td.site, th.site { text-align: left; font-weight: 600; white-space: nowrap; }
td.suppressed { text-align: center; color: #8a4b00; background: #fff6e8; font-style: italic; }
td.absent { text-align: center; color: #8b0000; background: #fdeaea; } td.took-part { text-align: center; }
td.partly { text-align: center; color: #8a4b00; background: #fff6e8; }
.withheld { color: #8a4b00; font-style: italic; }
small { color: #555; } img { max-width: 100%; } .caption { color: #444; font-size: 0.92em; max-width: 60em; }
code { font-size: 0.9em; background: #f4f4f4; padding: 0 0.2em; } li { margin: 0.2em 0; }
@media print { body { margin: 0; max-width: none; font-size: 11px; } h2 { break-after: avoid; }
  table, figure, img { break-inside: avoid; } }
"""

PAGE = (
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>OncoFed federation report: {{ data.run.folder }}</title><style>{% raw %}"""
    + STYLE
    + """{% endraw %}</style></head><body>
<h1>Federation validation report</h1><p class="meta">Run <code>{{ data.run.folder }}</code> ·
generated {{ data.run.generated_utc }} · rounds validated: {{ data.run.rounds_evaluated|join(", ") }} ·
<a href="{{ model_card }}">model card</a> (intended use, data, hashes)</p>
{% include "federation_help.html" %}
{% include "summary.html" %}
{% include "participation.html" %}
{% include "sites.html" %}
{% include "rounds.html" %}
{% include "distributions.html" %}
{% include "baseline.html" %}
{% include "cross_site.html" %}
{% include "overview.html" %}
{% include "methods.html" %}
<h2 id="limitations">Limitations</h2><ul>
{% for note in data.limitations %}
<li>{{ note }}</li>
{% endfor %}
</ul></body></html>
"""
)

MACROS = """{% macro site(name) %}<span class="site-name">{{ name }}</span>{% endmacro %}
{% macro site_list(names) %}{% for name in names %}{{ site(name) }}{{ ", " if not loop.last else "" }}{% endfor %}
{%- endmacro %}
{% macro image(src, alt) %}<img alt="{{ alt }}" src="{{ src }}">{% endmacro %}
{% macro suppressed_row(row, columns) %}
<tr><td class="site">{{ site(row.name) }}</td><td class="suppressed" colspan="{{ columns }}">{{ row.note }}</td></tr>
{% endmacro %}
{% macro ci_cell(metrics, metric, region, digits) %}
{% set stat = stats(metrics, metric, region) %}
<td>{{ stat.mean|num(digits) }} <small>[{{ stat["ci-low"]|num(digits) }}, {{ stat["ci-high"]|num(digits) }}]</small>
<br><small>
{%- if stat.median is not none -%}
median {{ stat.median|num(digits) }} (IQR {{ stat.q1|num(digits) }}–{{ stat.q3|num(digits) }})
{%- else -%}
<span class="withheld">median, IQR withheld</span>
{%- endif -%}
</small></td>
{% endmacro %}
"""

SUMMARY = """{% from "macros.html" import site, site_list %}
{% set run, training = data.run, data.training %}
{% set reported = data.sites|selectattr("status", "eq", REPORTED)|list %}
{% set suppressed = data.sites|rejectattr("status", "eq", REPORTED)|list %}
{% set pooled = data.pooled|by_key("round") %}
{% set first, last = pooled[run.rounds_evaluated[0]], pooled[run.last_round] %}
<h2 id="summary">Summary</h2><ul>
{% if run.get("status") not in (none, COMPLETED) %}
{% set stopped = run.get("stopped") or {} %}
<li><b>The run did not complete</b> ({{ run.status }} after round {{ stopped.get("after_round") }} of
{{ run.rounds_planned }}): {{ stopped.get("reason") or "its coordinator stopped" }}. It has no final model.</li>
{% endif %}
{% if run.get("ended_early") %}
<li><b>The run ended early</b>: {{ run.ended_early }}.</li>
{% endif %}
<li>{{ data.sites|length }} sites took part. Reporting validation numbers at their last round:
{{ site_list(reported|map(attribute="name")) if reported else "none" }}.</li>
{% if suppressed %}
<li>Not reporting (their own disclosure policy or limits let no number leave):
{% for row in suppressed %}{{ site(row.name) }}: {{ row.note }}{{ ", " if not loop.last else "" }}{% endfor %}.</li>
{% endif %}
{% if MEAN_DICE in last %}
<li>Global model at round {{ run.last_round }}: pooled mean Dice <b>{{ last[MEAN_DICE]|num }}</b> over
{{ last[N_CASES] }} validation cases at {{ last.sites|length|plural("reporting site") }}
(round {{ first.round }}: {{ first.get(MEAN_DICE)|num }}).</li>
{% endif %}
{% if reported|length > 1 %}
{% set worst = reported|min(attribute="metrics." ~ MEAN_DICE) %}
<li>Lowest site: {{ site(worst.name) }}, mean Dice {{ worst.metrics[MEAN_DICE]|num }}
[95 % CI {{ worst.metrics.get(MEAN_DICE_CI_LOW)|num }}, {{ worst.metrics.get(MEAN_DICE_CI_HIGH)|num }}],
n = {{ worst.n_cases }}.</li>
{% endif %}
{% set best = run.get("best") or {} %}
{% if best.get("round") is not none %}
<li>Best round: {{ best.round }} (mean Dice {{ best.get(MEAN_DICE)|num }} over the sites that reported in it),
saved as <code>{{ best.get("model") }}</code>, chosen on the validation cases by this rule:
{{ best.get("rule") or "the highest pooled mean Dice" }}.</li>
{% endif %}
<li>Training: {{ training.strategy.text }}.</li>
{% for drop in training.drops %}
<li><b>Unstable round {{ drop.round }}</b>: pooled mean Dice fell from {{ drop["from"]|num }} to
{{ drop.to|num }}.</li>
{% endfor %}
{% for row in training.baseline.sites if row.verdict %}
<li>Local-only baseline: {{ row.verdict }}.</li>
{% endfor %}
{% set traffic = training.traffic.per_round %}
{% if traffic %}
<li>Weights travelled as {{ training.traffic.dtype }}: {{ traffic[-1].bytes|megabytes }} moved in round
{{ traffic[-1].round }} (all sites, both directions, measured on the messages).</li>
{% endif %}
{% set updates = training.updates %}
{% if updates.largest %}
<li>Updates: the largest came from {{ updates.largest.site }} in round {{ updates.largest.round }}, L2 norm
{{ updates.largest.norm|num(2) }} (median of all sites' {{ updates.median|num(2) }}); each was clipped to
{{ updates.bound|g if updates.bound else "no bound" }}, no site weighed more than {{ updates.max_site_weight|g }} of
the mean.</li>
{% endif %}
{% if updates.least_aligned %}
<li>Directions: the updates least aligned with the median of the others' came from {{ updates.least_aligned.site }}
(mean cosine {{ updates.least_aligned.mean_cosine|num(2) }} over {{ updates.least_aligned.rounds }} rounds, lowest
{{ updates.least_aligned.cosine|num(2) }} in round {{ updates.least_aligned.round }}); a site claiming more than
{{ updates.max_site_weight|g }} of the cases was left out of a round when its mean cosine over the run was below
{{ updates.min_cosine|g }} and its cosines did not rise and fall with the other sites' (alignment below
{{ updates.min_alignment|g }}).</li>
{% endif %}
{% set privacy = training.privacy %}
{% if privacy.enabled and privacy.epsilon %}
<li>Central differential privacy: ε = {{ privacy.epsilon[-1].epsilon|num(2) }} at δ = {{ privacy.delta|g }}
after round {{ privacy.epsilon[-1].round }} (site-level, noise multiplier {{ privacy.noise_multiplier|g }},
clipping norm {{ privacy.clipping_norm|g }}).</li>
{% endif %}
</ul>
"""

PARTICIPATION = """{% from "macros.html" import site %}
{% set grid = data.get("participation") or {} %}
{% set rounds, updated = grid.get("rounds", []), grid.get("model_updated", {}) %}
{% if rounds %}
<h2 id="participation">Participation</h2><p class="caption">Each site in each round: ✓ trained (from round 1)
and reported its validation; otherwise what happened in each phase: the site's own policy (declined or refused
training, suppressed or refused validation; amber) or a reply that did not arrive or was unusable (offline,
timeout, failed, or dropped with the check it failed; red). The global model changes in a round only when at
least {{ data.run.get("min_sites") }} sites (min-sites) sent sound training replies.</p>
<table><tr><th class="site">Site</th>{% for r in rounds %}<th>r{{ r }}</th>{% endfor %}</tr>
{% for name, cells in grid.sites.items() %}
<tr><td class="site">{{ site(name) }}</td>
{% for r in rounds %}
{% set cell = cells.get(r|string) %}
{% set notes = phase_notes(cell) if cell is not none else [] %}
{% if cell is none %}
<td class="absent">—</td>
{% elif not notes %}
<td class="took-part">✓</td>
{% elif cell.status in EVALUATE_STATUSES %}{# its validation arrived; its policy held something back #}
<td class="partly"><small>{{ notes|join("; ") }}</small></td>
{% else %}
<td class="absent"><small>
{{- cell.status ~ " (" ~ cell.reason ~ ")" if cell.reason else notes|join("; ") -}}
</small></td>
{% endif %}
{% endfor %}
</tr>
{% endfor %}
<tr><td class="site">global model</td>
{% for r in rounds %}
{% set round_model = updated.get(r|string) %}
{% if round_model is none %}
<td>—</td>
{% elif round_model.updated %}
<td>updated</td>
{% else %}
<td><small>kept: {{ round_model.reason }}</small></td>
{% endif %}
{% endfor %}
</tr></table>
{% endif %}
"""

SITES = """{% from "macros.html" import site, suppressed_row, ci_cell %}
<h2 id="sites">Per-site results</h2><p class="caption">Each site's last validated round (round
{{ data.run.last_round }} unless noted), over its own validation cases: mean [95 % CI of the mean], median (IQR).
Each site's disclosure policy decides what it sends: no numbers below its minimum of cases, medians and quartiles
only from its own higher minimum (marked <i>withheld</i> otherwise); see Methods.</p>
<table><tr><th class="site">Site</th><th>Cases</th><th>Mean Dice over regions</th>
{% for region in data.regions %}<th>Dice {{ region.name|upper }}</th>{% endfor %}</tr>
{% for row in data.sites %}
{% if row.status != REPORTED %}
{{ suppressed_row(row, data.regions|length + 2) }}
{% else %}
<tr><td class="site">{{ site(row.name) }}
{%- if row.get("withheld") %}<br><small class="withheld">withheld: {{ row.withheld|join(", ") }}</small>{% endif -%}
</td><td>{{ row.n_cases }}</td>
<td>{{ row.metrics[MEAN_DICE]|num }} <small>[{{ row.metrics.get(MEAN_DICE_CI_LOW)|num }},
{{ row.metrics.get(MEAN_DICE_CI_HIGH)|num }}]</small></td>
{% for region in data.regions %}{{ ci_cell(row.metrics, "dice", region.name, 3) }}{% endfor %}
</tr>
{% endif %}
{% endfor %}
</table>
{% for region in data.regions %}
<h3>{{ region.name|upper }}: {{ region.title }} (labels {{ region.labels }})</h3><table><tr><th class="site">Site</th>
{% for metric in data.metrics %}
<th>{{ metric.title }}{% if metric.unit %} ({{ metric.unit }}){% endif %}</th>
{% endfor %}
</tr>
{% for row in data.sites %}
{% if row.status != REPORTED %}
{{ suppressed_row(row, data.metrics|length) }}
{% else %}
<tr><td class="site">{{ site(row.name) }}</td>
{% for metric in data.metrics %}{{ ci_cell(row.metrics, metric.name, region.name, metric.name|digits) }}{% endfor %}
</tr>
{% endif %}
{% endfor %}
</table>
{% endfor %}
<h3>Empty masks and lesion detection</h3><p class="caption">Cases (counts over the site's validation cases) where
the region is absent in both the label and the prediction, present but missed entirely, or absent but predicted
(a false alarm); lesions are connected components.</p>
<table><tr><th class="site">Site</th><th>Region</th><th>Both empty</th><th>Missed</th><th>False alarm</th>
<th>Lesions found</th><th>Lesion sensitivity</th><th>False lesions</th></tr>
{% for row in data.sites %}
{% for region in data.regions %}
{% if row.status != REPORTED %}
{% if loop.first %}{{ suppressed_row(row, 7) }}{% endif %}
{% else %}
{% set count = counts(row.metrics, region.name) %}
{% if count is none %}
<tr><td class="site">{{ site(row.name) if loop.first else "" }}</td><td>{{ region.name|upper }}</td>
<td colspan="6">no counts in this site's reply</td></tr>
{% else %}
{% set found, missed = count["lesions-tp"], count["lesions-fn"] %}
<tr><td class="site">{{ site(row.name) if loop.first else "" }}</td><td>{{ region.name|upper }}</td>
<td>{{ count["empty-both"] }}</td><td>{{ count["empty-pred"] }}</td><td>{{ count["empty-truth"] }}</td>
<td>{{ found }} / {{ found + missed }}</td><td>{{ (found / (found + missed))|num if found + missed else "—" }}</td>
<td>{{ count["lesions-fp"] }}</td></tr>
{% endif %}
{% endif %}
{% endfor %}
{% endfor %}
</table>
"""

ROUNDS = """{% from "macros.html" import site, image %}
<h2 id="rounds">Dice over rounds</h2>{{ image(charts.rounds, "Mean Dice per site over rounds") }}
<p class="caption">Mean Dice over regions per site after each round (round 0: the initial model), shaded: 95 % CI
of the mean; dashed: pooled over the reporting sites.</p>
{% if data.training.drops %}
<p class="caption"><b>Sharp drops of the pooled mean Dice (more than 0.05):</b>
{% for drop in data.training.drops %}round {{ drop.round }}: {{ drop["from"]|num }} → {{ drop.to|num }}
{{- "; " if not loop.last else "" }}{% endfor %}.</p>
{% endif %}
<table><tr><th class="site">Site</th>{% for r in data.run.rounds_evaluated %}<th>r{{ r }}</th>{% endfor %}</tr>
{% for name, points in data.rounds.items() %}
{% set by_round = points|by_key("round") %}
<tr><td class="site">{{ site(name) }}</td>
{% for r in data.run.rounds_evaluated %}
{% set point = by_round.get(r) %}
{% if point is none %}
<td>—</td>
{% elif point.status == REPORTED %}
<td>{{ point[MEAN_DICE]|num }}</td>
{% else %}
<td>{{ point.status }}</td>
{% endif %}
{% endfor %}
</tr>
{% endfor %}
<tr><td class="site">pooled</td>{% for point in data.pooled %}<td>{{ point.get(MEAN_DICE)|num }}</td>{% endfor %}
</tr></table>
"""

DISTRIBUTIONS = """{% from "macros.html" import image %}
<h2 id="distributions">Per-site metric distributions</h2><p class="caption">At each site's last round: box from
the first to the third quartile and line at the median (only where a site sends them), diamond at the mean with its
95 % CI. Drawn from the sites' aggregates; no per-case value leaves a site, so there are no whiskers to the
extremes.</p>
{% for chart in charts.distributions %}{{ image(chart.src, chart.metric.title ~ " per site") }}{% endfor %}
"""

BASELINE = """{% from "macros.html" import site, image %}
{% set baseline = data.training.baseline %}
<h2 id="baseline">Global model vs local-only baselines</h2>
{% if not baseline.enabled %}
<p>This run has no local-only baseline (a model trained at each site on its own data alone; run config
<code>local-baseline = true</code>), so this report cannot say whether federation helped a given site.</p>
{% else %}
<p class="caption">Each site also trained a local-only model on its own training cases (same initial weights, same
training per round; it never left the site) and validated both models on the same cases. Difference = global −
local-only mean Dice over regions, with a paired bootstrap 95 % CI computed at the site. A site below its minimum
number of cases sends none of these.</p><ul>
{% for row in baseline.sites %}
{% if row.verdict %}
<li>{{ row.verdict }}</li>
{% else %}
<li>{{ site(row.name) }}: {{ row.get("status", "no numbers") }}, no comparison</li>
{% endif %}
{% endfor %}
</ul>
{% if charts.baseline %}{{ image(charts.baseline, "Global and local-only mean Dice per site over rounds") }}{% endif %}
<table><tr><th class="site">Site</th><th>Round</th><th>Global</th><th>Local-only [95 % CI]</th>
<th>Difference [95 % CI]</th></tr>
{% for row in baseline.sites %}
{% for point in row.rounds %}
<tr><td class="site">{{ site(row.name) }}</td><td>{{ point.round }}</td><td>{{ point.global|num }}</td>
<td>{{ point.local|num }} <small>[{{ point.local_ci[0]|num }}, {{ point.local_ci[1]|num }}]</small></td>
<td>{{ point.gain|signed }} <small>[{{ point.gain_ci[0]|signed }}, {{ point.gain_ci[1]|signed }}]</small></td></tr>
{% endfor %}
{% endfor %}
</table>
{% endif %}
"""

OVERVIEW = """{% from "macros.html" import site %}
<h2 id="data">Data overview</h2><p class="caption">Counts each site sent: cases from its description (sent once
per run), training cases from its last training round, validation cases from its last validation. Under the sites'
disclosure policy a count between 1 and a site's minimum is not sent (—), and no voxel-spacing or image-size range
is sent (a range is two single cases' values).</p>
<table><tr><th class="site">Site</th><th>Cases</th><th>Training</th><th>Validation</th><th>Skipped</th>
<th>Site description</th></tr>
{% for row in data.data_overview %}
<tr><td class="site">{{ site(row.site) }}</td><td>{{ row.total_cases|whole }}</td>
<td>{{ row.training_note if row.get("training_note") else row.training_cases|whole }}</td>
<td>{{ row.note if row.note else row.validation_cases }}</td><td>{{ row.skipped_cases|whole }}</td>
<td><small>
{%- for key, value in row.described|dictsort(true) -%}
{{ key }} {{ value|plain }}{{ " · " if not loop.last else "" }}
{%- else -%}
—
{%- endfor -%}
</small></td></tr>
{% endfor %}
</table>
"""

TEMPLATES = {
    "report.html": PAGE,
    "macros.html": MACROS,
    "summary.html": SUMMARY,
    "participation.html": PARTICIPATION,
    "sites.html": SITES,
    "rounds.html": ROUNDS,
    "distributions.html": DISTRIBUTIONS,
    "baseline.html": BASELINE,
    "federation_help.html": FEDERATION_HELP,
    "cross_site.html": CROSS_SITE,
    "overview.html": OVERVIEW,
    "methods.html": METHODS,
}
"""Template name → source; "report.html" is the page, the others its sections and shared macros."""


def page_environment() -> Environment:
    """A Jinja2 environment over TEMPLATES that escapes every value it prints and fails on a missing one."""
    return Environment(
        loader=DictLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
