"""The report's cross-site generalization matrix section and its "did federation help" paragraph, as Jinja2
template sources (page_templates loads them with the others; a FAB carries no template files)."""

FEDERATION_HELP = """{% from "macros.html" import site %}
{% set help = data.federation_help %}
{% if help %}
<p id="federation-help"><b>Did federation help each site?</b>
{% for row in help %}{{ row.answer[:1]|upper }}{{ row.answer[1:] }}{{ "; " if not loop.last else "." }}
{% endfor %}
A positive difference means the site's model from the federation{{ " (personalized)" if help|selectattr(
"comparison", "eq", PERSONALIZED_VS_LOCAL)|list else "" }} scored a higher mean Dice than the model it trained
alone, on the same validation cases; the 95 % CI is a paired bootstrap computed at the site.</p>
{% elif data.training.baseline.enabled %}
<p id="federation-help"><b>Did federation help each site?</b> No site sent a comparison with its local-only model
at its last validated round (see below).</p>
{% else %}
<p id="federation-help"><b>Did federation help each site?</b> This run cannot say: it trained no local-only
baseline (run config <code>local-baseline = true</code>).</p>
{% endif %}
"""

CROSS_SITE = """{% from "macros.html" import site %}
{% set matrix = data.cross_site %}
{% if matrix %}
<h2 id="cross-site">Cross-site generalization</h2>
{% for sentence in matrix.sentences %}<p><b>{{ sentence }}.</b></p>{% endfor %}
<p class="caption">Mean Dice over regions and cases of each model (rows) at each site where it was measured
(columns). The federated model: every site's last validation. A site's own model: its local-only baseline, at its
own site (its baseline) and, with the consent of the sites involved, at the other consenting sites, which sent
aggregates only. A blank cell was not allowed: a site that did not consent
({{ matrix.not_consenting|join(", ") or "none" }}) neither sent its local model nor measured the others'. The
coordinator saw the consenting sites' local-only weights in transit and kept none.</p>
<table><tr><th class="site">Model</th>{% for name in matrix.sites %}<th>{{ site(name) }}</th>{% endfor %}</tr>
{% for row in matrix.rows %}
<tr><td class="site">{{ row.model }}</td>
{% for name in matrix.sites %}
{% set cell = row.cells.get(name) %}
{% if cell is none %}<td></td>
{% elif cell.value is none %}<td class="suppressed">{{ cell.text }}</td>
{% else %}<td>{{ cell.value|num }} <small>n = {{ cell.n_cases }}</small></td>
{% endif %}
{% endfor %}</tr>
{% endfor %}
</table>
{% endif %}
"""
