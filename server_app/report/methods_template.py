"""The Methods section of the federation report as a Jinja2 template source (see page_templates for why the
templates are Python strings): validation, metric definitions, empty masks, uncertainty, the sites' disclosure
control, their exact settings, the model and its training, and the software."""

METHODS = """{% from "macros.html" import site %}
{% set methods = data.methods %}
{% set conventions, model = methods.conventions, methods.model %}
{% set strategy, privacy = data.training.strategy, data.training.privacy %}
<h2 id="methods">Methods</h2>
<h3>Validation</h3><p>After every round (round 0: the initial model) each site runs the global model on its own
held-out validation cases (a split the site made once of its own cases and reuses in every run; no run setting
chooses them) by sliding-window inference at the run's spacing,
maps the prediction back onto each case's stored grid (inverse of the preprocessing, nearest neighbour) and measures
it there, in millimetres of the case's own voxel spacing. Regions:</p><ul>
{% for region in data.regions %}
<li><b>{{ region.name|upper }}</b> ({{ region.title }}): labels {{ region.labels }}</li>
{% endfor %}
</ul>
<h3>Metric definitions</h3><ul>
<li><b>Dice</b> = 2|P∩T| / (|P| + |T|) for prediction P and label T.</li>
<li><b>HD95</b> (mm): the larger of the two directed 95th percentiles of distances between surface voxels
(MONAI's definition; other tools pool both directions and give different values).</li>
<li><b>Surface Dice</b> at a tolerance of {{ conventions.get(Validation.NSD_TOLERANCE_MM)|num(1) }} mm: the share of
both surfaces lying within the tolerance of the other surface.</li>
<li><b>Absolute volume difference</b> (mL): |vol(P) − vol(T)|.</li>
<li><b>Sensitivity</b> = |P∩T| / |T|; <b>precision</b> = |P∩T| / |P|.</li>
<li><b>Lesion detection</b>: connected components (26-connectivity); a label lesion is found when a predicted voxel
overlaps it; a predicted lesion overlapping no label voxel is a false lesion; no minimum lesion size.</li></ul>
<h3>Empty masks</h3><p>Both empty: Dice, surface Dice, sensitivity and precision 1, HD95 0. Exactly one empty: those
0 and HD95 = {{ conventions.get(Validation.HD95_PENALTY_MM)|num(2) }} mm, a BraTS-style penalty (the diagonal of a
240 × 240 × 155 mm volume); the official BraTS evaluation packages use 373 or 374 mm, so HD95 means that include
such cases differ slightly from challenge tables. The number of such cases is reported separately for each site
and region.</p>
<h3>Uncertainty and aggregation</h3><p>Per site: n, mean and a {{ conventions.get(Validation.CI_LEVEL)|percent }}
percentile-bootstrap confidence interval of the mean ({{ conventions.get(Validation.BOOTSTRAP_RESAMPLES, "—") }}
resamples of the cases, the same resamples for every metric, seeded from a secret the site keeps, so the
coordinator cannot replay them); median and quartiles as Harrell–Davis estimates (a weighted mean of all order
statistics) from a site's <code>{{ Validation.MIN_POSITION_CASES }}</code> on. Pooled values are means over all
cases of the reporting sites (site means weighted by their case counts).</p>
<h3>Disclosure control at the sites</h3><p>Every number in this report was released by a site under
its own disclosure policy
(<code>{{ conventions.get(Validation.DISCLOSURE_POLICY, "site_app/disclosure/policy.py") }}</code>), which follows
statistical disclosure control practice for outputs leaving a trusted environment (DataSHIELD, ACRO/SACRO, Eurostat
RDC guidelines). Thresholds are each site's own settings; the coordinator cannot lower them.</p><ul>
<li>Threshold: no number about fewer than <code>{{ NodeConfig.MIN_REPORT_CASES }}</code> validation cases (default
{{ DEFAULT_MIN_REPORT_CASES }}); no weights from fewer than <code>{{ NodeConfig.MIN_TRAIN_CASES }}</code> training
cases (default {{ DEFAULT_MIN_TRAIN_CASES }}).</li>
<li>No minimum, maximum or other single-case value (hence no voxel-spacing ranges); median and quartiles only from
<code>{{ NodeConfig.MIN_POSITION_CASES }}</code> cases on (default {{ DEFAULT_MIN_POSITION_CASES }}; ACRO's
threshold for position statistics), as Harrell–Davis estimates, never one case's value.</li>
<li>Rounding (decimal places per metric):
{{ conventions.get(Validation.RELEASE_DECIMALS, [])|join(", ") or "—" }}.</li>
<li>Differencing: {{ conventions.get(Validation.VALIDATION_SET, "—") }}.</li>
<li>Local-only baseline (run setting <code>local-baseline</code>): only the means and CIs of the local-only model
and of the paired difference global − local-only, over the same released validation cases, rounded alike; the
local-only model itself never leaves the site.</li>
<li>Run settings outside a site's limits (spacing, patch size, samples per case, batch size, local epochs, resampled
volume size) are refused by the site.</li></ul>
<h3>Exact settings used by the sites</h3><ul>
{% for setting in conventions.get(Validation.SETTINGS, []) %}
<li><code>{{ setting }}</code></li>
{% endfor %}
</ul>
{% if methods.sites_with_other_conventions %}
<p><b>Sites with other metric conventions:</b> {{ methods.sites_with_other_conventions|join(", ") }} — their
numbers are not comparable with the others'.</p>
{% endif %}
<h3>Model and training</h3><p>
{%- if model -%}
{{ model.architecture }}, preset <code>{{ model.preset }}</code>: channels {{ model.channels }}, strides
{{ model.strides }}, {{ model.residual_units }} residual units, {{ model.parameters|thousands }} parameters.
{%- else -%}
not recorded
{%- endif %} {{ methods.aggregation }}.</p>
<p>Every random draw of a round at a site (patch order and sampling, augmentation) is seeded from the run seed, the
round and the site, so a run repeats exactly on a CPU. Weights travelled as {{ strategy.transport_dtype }} in both
directions; training and aggregation ran in float32. Bytes per round are measured on the messages the coordinator
sent and received.
{% if strategy.min_lesion_mm3 > 0 %}
Post-processing at validation: connected components (26-connectivity) of the predicted tumor (labels 1–3
together) smaller than {{ strategy.min_lesion_mm3|g }} mm³ were set to background before measuring (scipy.ndimage,
as for lesion counting). <code>site predict</code> does not post-process.
{% endif %}
{% if privacy.enabled %}
Central differential privacy (Flower's server-side fixed clipping): each site's update is clipped to L2 norm
{{ privacy.clipping_norm|g }}, the sites' clipped updates are averaged with equal weights and Gaussian noise of
σ = {{ privacy.noise_multiplier|g }} × clipping norm / number of sites is added. ε at δ = {{ privacy.delta|g }}
from Flower's RDP accountant (site-level, add-or-remove-one, no sampling amplification), cumulative after each
round: {% for point in privacy.epsilon %}r{{ point.round }} {{ point.epsilon|num(2) }}
{{- ", " if not loop.last else "" }}{% else %}—{% endfor %}.
{% endif %}
</p>
<table><tr><th class="site">Run setting</th><th>Value</th></tr>
{% for key, value in methods.training.items() %}
<tr><td class="site">{{ key }}</td><td>{{ value }}</td></tr>
{% endfor %}
</table>
<h3>Software</h3><p>Coordinator:
{% for key, value in methods.coordinator_software.items() %}{{ key }} {{ value }}{{ ", " if not loop.last else "" }}
{%- endfor %}.</p><ul>
{% for name, versions in methods.site_software|dictsort(true) %}
<li>{{ site(name) }}: {{ versions|join(", ") }}</li>
{% endfor %}
</ul>
"""
