"""The federation report as one self-contained, printable HTML page: inline CSS, charts as base64 PNG data URIs,
no script and no external resource."""

import base64
from html import escape

from models.shared.node_config import (
    DEFAULT_MIN_POSITION_CASES,
    DEFAULT_MIN_REPORT_CASES,
    DEFAULT_MIN_TRAIN_CASES,
    NodeConfig,
)
from models.shared.wire import (
    EVALUATE_STATUSES,
    MEAN_DICE,
    MEAN_DICE_CI_HIGH,
    MEAN_DICE_CI_LOW,
    N_CASES,
    STATS,
    Status,
    Validation,
    region_key,
    stat_key,
)
from server_app.report import charts as report_charts
from server_app.report.model_card import MODEL_CARD_FILE
from server_app.run_record.run_folder import COMPLETED

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


def render_report(data: dict) -> str:
    """The whole page; every number comes from `data` (report_data.report_data)."""
    run = data["run"]
    sections = [
        _summary(data),
        _participation(data),
        _site_tables(data),
        _rounds(data),
        _distributions(data),
        _baseline(data),
        _overview(data),
        _methods(data),
        _limitations(data),
    ]
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>OncoFed federation report: {escape(run['folder'])}</title><style>{STYLE}</style></head><body>"
        f'<h1>Federation validation report</h1><p class="meta">Run <code>{escape(run["folder"])}</code> · '
        f"generated {escape(run['generated_utc'])} · rounds validated: "
        f"{escape(', '.join(str(r) for r in run['rounds_evaluated']))} · "
        f'<a href="{MODEL_CARD_FILE}">model card</a> (intended use, data, hashes)</p>'
        f"{''.join(sections)}</body></html>\n"
    )


def _num(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _digits(metric: str) -> int:
    return {"hd95": 1, "avd": 2}.get(metric, 3)


def _site(name: str) -> str:
    return f'<span class="site-name">{escape(name)}</span>'


def _image(png: bytes, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _summary(data: dict) -> str:
    run, sites = data["run"], data["sites"]
    reported = [s for s in sites if s["status"] == Status.REPORTED]
    suppressed = [s for s in sites if s["status"] != Status.REPORTED]
    pooled = {p["round"]: p for p in data["pooled"]}
    first, last = pooled[run["rounds_evaluated"][0]], pooled[run["last_round"]]
    items = []
    if run.get("status") not in (None, COMPLETED):
        stopped = run.get("stopped") or {}
        items.append(
            f"<b>The run did not complete</b> ({escape(str(run['status']))} after round "
            f"{escape(str(stopped.get('after_round')))} of {escape(str(run['rounds_planned']))}): "
            f"{escape(str(stopped.get('reason') or 'its coordinator stopped'))}. It has no final model."
        )
    items += [
        (
            f"{len(sites)} sites took part. Reporting validation numbers at their last round: "
            f"{', '.join(_site(s['name']) for s in reported) or 'none'}."
        )
    ]
    if suppressed:
        items.append(
            "Not reporting (their own disclosure policy or limits let no number leave): "
            + ", ".join(f"{_site(s['name'])}: {escape(s['note'])}" for s in suppressed)
            + "."
        )
    if MEAN_DICE in last:
        items.append(
            f"Global model at round {run['last_round']}: pooled mean Dice <b>{_num(last[MEAN_DICE])}</b> "
            f"over {last[N_CASES]} validation cases at {_plural(len(last['sites']), 'reporting site')} "
            f"(round {first['round']}: {_num(first.get(MEAN_DICE))})."
        )
    if len(reported) > 1:
        worst = min(reported, key=lambda s: s["metrics"][MEAN_DICE])
        items.append(
            f"Lowest site: {_site(worst['name'])}, mean Dice {_num(worst['metrics'][MEAN_DICE])} "
            f"[95 % CI {_num(worst['metrics'].get(MEAN_DICE_CI_LOW))}, "
            f"{_num(worst['metrics'].get(MEAN_DICE_CI_HIGH))}], n = {worst['n_cases']}."
        )
    best = run.get("best") or {}
    if best.get("round") is not None:
        items.append(
            f"Best round: {best['round']} (mean Dice {_num(best.get(MEAN_DICE))} over the sites that reported in"
            f" it), saved as <code>{escape(str(best.get('model')))}</code>, chosen on the validation cases by this"
            f" rule: {escape(str(best.get('rule') or 'the highest pooled mean Dice'))}."
        )
    items += _training_summary(data["training"])
    return f'<h2 id="summary">Summary</h2><ul>{"".join(f"<li>{item}</li>" for item in items)}</ul>'


def _training_summary(training: dict) -> list[str]:
    """Strategy, sharp drops, baseline verdicts, bytes and privacy, one line each."""
    items = [f"Training: {escape(training['strategy']['text'])}."]
    for drop in training["drops"]:
        items.append(
            f"<b>Unstable round {drop['round']}</b>: pooled mean Dice fell from {_num(drop['from'])} to "
            f"{_num(drop['to'])}."
        )
    items += [
        f"Local-only baseline: {escape(site['verdict'])}."
        for site in training["baseline"]["sites"]
        if site["verdict"]
    ]
    traffic = training["traffic"]["per_round"]
    if traffic:
        items.append(
            f"Weights travelled as {escape(training['traffic']['dtype'])}: {_megabytes(traffic[-1]['bytes'])} moved "
            f"in round {traffic[-1]['round']} (all sites, both directions, measured on the messages)."
        )
    privacy = training["privacy"]
    if privacy["enabled"] and privacy["epsilon"]:
        last = privacy["epsilon"][-1]
        items.append(
            f"Central differential privacy: ε = {last['epsilon']:.2f} at δ = {privacy['delta']:g} after round "
            f"{last['round']} (site-level, noise multiplier {privacy['noise_multiplier']:g}, clipping norm "
            f"{privacy['clipping_norm']:g})."
        )
    return items


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.2f} MB"


def _participation(data: dict) -> str:
    """The site × round grid: who trained and validated in each round, and for the others why not."""
    grid = data.get("participation") or {}
    rounds, updated = grid.get("rounds", []), grid.get("model_updated", {})
    if not rounds:
        return ""
    rows = []
    for site, cells in grid["sites"].items():
        tds = []
        for rnd in rounds:
            cell = cells.get(str(rnd))
            if cell is None:
                tds.append('<td class="absent">—</td>')
                continue
            phases = [
                f"{name} {text}"
                for name, text in (("train", cell["train"]), ("evaluate", cell["evaluate"]))
                if text and text not in (Status.TOOK_PART, Status.NOT_ASKED)
            ]
            if not phases:
                tds.append('<td class="took-part">✓</td>')
            elif (
                cell["status"] in EVALUATE_STATUSES
            ):  # its validation arrived; its policy held something back
                tds.append(f'<td class="partly"><small>{escape("; ".join(phases))}</small></td>')
            else:
                text = f"{cell['status']} ({cell['reason']})" if cell["reason"] else "; ".join(phases)
                tds.append(f'<td class="absent"><small>{escape(text)}</small></td>')
        rows.append(f'<tr><td class="site">{_site(site)}</td>{"".join(tds)}</tr>')
    model = "".join(
        "<td>—</td>"
        if str(r) not in updated
        else (
            "<td>updated</td>"
            if updated[str(r)]["updated"]
            else f"<td><small>kept: {escape(updated[str(r)]['reason'])}</small></td>"
        )
        for r in rounds
    )
    head = "".join(f"<th>r{r}</th>" for r in rounds)
    quorum = data["run"].get("min_sites")
    return (
        '<h2 id="participation">Participation</h2><p class="caption">Each site in each round: ✓ trained (from '
        "round 1) and reported its validation; otherwise what happened in each phase: the site's own policy "
        "(declined or refused training, suppressed or refused validation; amber) or a reply that did not arrive "
        "or was unusable (offline, timeout, failed, or dropped with the check it failed; red). The global model "
        "changes in a round only when at least "
        f"{escape(str(quorum))} sites (min-sites) sent sound training replies.</p>"
        f'<table><tr><th class="site">Site</th>{head}</tr>{"".join(rows)}'
        f'<tr><td class="site">global model</td>{model}</tr></table>'
    )


def _ci_cell(metrics: dict, metric: str, region: str, digits: int) -> str:
    """Mean [CI]; median (IQR) when the site sent them, else a mark that its policy withheld them."""
    stat = {s: metrics.get(stat_key(metric, region, s)) for s in STATS}
    position = (
        f"median {_num(stat['median'], digits)} (IQR {_num(stat['q1'], digits)}–{_num(stat['q3'], digits)})"
        if stat["median"] is not None
        else '<span class="withheld">median, IQR withheld</span>'
    )
    return (
        f"{_num(stat['mean'], digits)} <small>[{_num(stat['ci-low'], digits)}, "
        f"{_num(stat['ci-high'], digits)}]</small><br><small>{position}</small>"
    )


def _site_tables(data: dict) -> str:
    regions, metrics, sites = data["regions"], data["metrics"], data["sites"]
    last_round = data["run"]["last_round"]
    head = "".join(f"<th>Dice {escape(r['name'].upper())}</th>" for r in regions)
    rows = []
    for site in sites:
        if site["status"] != Status.REPORTED:
            rows.append(
                f'<tr><td class="site">{_site(site["name"])}</td>'
                f'<td class="suppressed" colspan="{len(regions) + 2}">{escape(site["note"])}</td></tr>'
            )
            continue
        m = site["metrics"]
        cells = "".join(f"<td>{_ci_cell(m, 'dice', r['name'], 3)}</td>" for r in regions)
        withheld = (
            f'<br><small class="withheld">withheld: {escape(", ".join(site["withheld"]))}</small>'
            if site.get("withheld")
            else ""
        )
        rows.append(
            f'<tr><td class="site">{_site(site["name"])}{withheld}</td><td>{site["n_cases"]}</td>'
            f"<td>{_num(m[MEAN_DICE])} <small>[{_num(m.get(MEAN_DICE_CI_LOW))}, "
            f"{_num(m.get(MEAN_DICE_CI_HIGH))}]</small></td>{cells}</tr>"
        )
    main = (
        f'<h2 id="sites">Per-site results</h2><p class="caption">Each site\'s last validated round (round '
        f"{last_round} unless noted), over its own validation cases: mean [95 % CI of the mean], median (IQR). "
        f"Each site's disclosure policy decides what it sends: no numbers below its minimum of cases, medians "
        f"and quartiles only from its own higher minimum (marked <i>withheld</i> otherwise); see Methods.</p>"
        f'<table><tr><th class="site">Site</th><th>Cases</th><th>Mean Dice over regions</th>{head}</tr>'
        f"{''.join(rows)}</table>"
    )
    per_region = []
    for region in regions:
        head = "".join(
            f"<th>{escape(m['title'])}{' (' + escape(m['unit']) + ')' if m['unit'] else ''}</th>"
            for m in metrics
        )
        rows = []
        for site in sites:
            if site["status"] != Status.REPORTED:
                rows.append(
                    f'<tr><td class="site">{_site(site["name"])}</td><td class="suppressed" '
                    f'colspan="{len(metrics)}">{escape(site["note"])}</td></tr>'
                )
                continue
            cells = "".join(
                f"<td>{_ci_cell(site['metrics'], m['name'], region['name'], _digits(m['name']))}</td>"
                for m in metrics
            )
            rows.append(f'<tr><td class="site">{_site(site["name"])}</td>{cells}</tr>')
        per_region.append(
            f"<h3>{escape(region['name'].upper())}: {escape(region['title'])} (labels "
            f'{escape(region["labels"])})</h3><table><tr><th class="site">Site</th>{head}</tr>'
            f"{''.join(rows)}</table>"
        )
    return main + "".join(per_region) + _detection_table(data)


def _detection_table(data: dict) -> str:
    rows = []
    for site in data["sites"]:
        for index, region in enumerate(data["regions"]):
            name = _site(site["name"]) if index == 0 else ""
            if site["status"] != Status.REPORTED:
                if index == 0:
                    rows.append(
                        f'<tr><td class="site">{name}</td><td class="suppressed" colspan="7">'
                        f"{escape(site['note'])}</td></tr>"
                    )
                continue
            r = region["name"]
            both, pred, truth, found, missed, false = (
                site["metrics"][region_key(count, r)]
                for count in (
                    "empty-both",
                    "empty-pred",
                    "empty-truth",
                    "lesions-tp",
                    "lesions-fn",
                    "lesions-fp",
                )
            )
            rate = _num(found / (found + missed)) if found + missed else "—"
            rows.append(
                f'<tr><td class="site">{name}</td><td>{escape(r.upper())}</td><td>{both}</td>'
                f"<td>{pred}</td><td>{truth}</td>"
                f"<td>{found} / {found + missed}</td><td>{rate}</td><td>{false}</td></tr>"
            )
    return (
        '<h3>Empty masks and lesion detection</h3><p class="caption">Cases (counts over the site\'s validation '
        "cases) where the region is absent in both the label and the prediction, present but missed entirely, "
        "or absent but predicted (a false alarm); lesions are connected components.</p>"
        '<table><tr><th class="site">Site</th><th>Region</th><th>Both empty</th><th>Missed</th>'
        "<th>False alarm</th><th>Lesions found</th><th>Lesion sensitivity</th><th>False lesions</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _rounds(data: dict) -> str:
    rows = []
    for site, points in data["rounds"].items():
        by_round = {p["round"]: p for p in points}
        cells = "".join(
            "<td>—</td>"
            if r not in by_round
            else f"<td>{_num(by_round[r][MEAN_DICE])}</td>"
            if by_round[r]["status"] == Status.REPORTED
            else f"<td>{escape(by_round[r]['status'])}</td>"
            for r in data["run"]["rounds_evaluated"]
        )
        rows.append(f'<tr><td class="site">{_site(site)}</td>{cells}</tr>')
    pooled = "".join(f"<td>{_num(p.get(MEAN_DICE))}</td>" for p in data["pooled"])  # one per evaluated round
    head = "".join(f"<th>r{r}</th>" for r in data["run"]["rounds_evaluated"])
    return (
        f'<h2 id="rounds">Dice over rounds</h2>'
        f"{_image(report_charts.dice_over_rounds(data), 'Mean Dice per site over rounds')}"
        '<p class="caption">Mean Dice over regions per site after each round (round 0: the initial model), '
        "shaded: 95 % CI of the mean; dashed: pooled over the reporting sites.</p>"
        f"{_drops(data['training']['drops'])}"
        f'<table><tr><th class="site">Site</th>{head}</tr>{"".join(rows)}'
        f'<tr><td class="site">pooled</td>{pooled}</tr></table>'
    )


def _drops(drops: list[dict]) -> str:
    if not drops:
        return ""
    listed = "; ".join(f"round {d['round']}: {_num(d['from'])} → {_num(d['to'])}" for d in drops)
    return f'<p class="caption"><b>Sharp drops of the pooled mean Dice (more than 0.05):</b> {listed}.</p>'


def _distributions(data: dict) -> str:
    shown = [m for m in data["metrics"] if m["name"] in ("dice", "hd95", "nsd")] or data["metrics"][:1]
    figures = "".join(
        _image(report_charts.distributions(data, metric), f"{metric['title']} per site") for metric in shown
    )
    return (
        '<h2 id="distributions">Per-site metric distributions</h2><p class="caption">At each site\'s last '
        "round: box from the first to the third quartile and line at the median (only where a site sends "
        "them), diamond at the mean with its 95 % CI. Drawn from the sites' aggregates; no per-case value "
        f"leaves a site, so there are no whiskers to the extremes.</p>{figures}"
    )


def _baseline(data: dict) -> str:
    baseline = data["training"]["baseline"]
    head = '<h2 id="baseline">Global model vs local-only baselines</h2>'
    if not baseline["enabled"]:
        return (
            f"{head}<p>This run has no local-only baseline (a model trained at each site on its own data alone; "
            "run config <code>local-baseline = true</code>), so this report cannot say whether federation "
            "helped a given site.</p>"
        )
    verdicts = "".join(
        f"<li>{escape(site['verdict'])}</li>"
        if site["verdict"]
        else f"<li>{_site(site['name'])}: {escape(site.get('status', 'no numbers'))}, no comparison</li>"
        for site in baseline["sites"]
    )
    rows = []
    for site in baseline["sites"]:
        for point in site["rounds"]:
            rows.append(
                f'<tr><td class="site">{_site(site["name"])}</td><td>{point["round"]}</td>'
                f"<td>{_num(point['global'])}</td><td>{_num(point['local'])} <small>[{_num(point['local_ci'][0])}, "
                f"{_num(point['local_ci'][1])}]</small></td><td>{point['gain']:+.3f} <small>"
                f"[{point['gain_ci'][0]:+.3f}, {point['gain_ci'][1]:+.3f}]</small></td></tr>"
            )
    chart = (
        _image(report_charts.baseline_curves(data), "Global and local-only mean Dice per site over rounds")
        if any(site["rounds"] for site in baseline["sites"])
        else ""
    )
    return (
        f'{head}<p class="caption">Each site also trained a local-only model on its own training cases (same '
        "initial weights, same training per round; it never left the site) and validated both models on the same "
        "cases. Difference = global − local-only mean Dice over regions, with a paired bootstrap 95 % CI computed "
        f"at the site. A site below its minimum number of cases sends none of these.</p><ul>{verdicts}</ul>{chart}"
        '<table><tr><th class="site">Site</th><th>Round</th><th>Global</th><th>Local-only [95 % CI]</th>'
        f"<th>Difference [95 % CI]</th></tr>{''.join(rows)}</table>"
    )


def _overview(data: dict) -> str:
    rows = []
    for row in data["data_overview"]:
        validation = escape(row["note"]) if row["note"] else row["validation_cases"]
        training = escape(row["training_note"]) if row.get("training_note") else _count(row["training_cases"])
        described = " · ".join(f"{escape(k)} {_plain(v)}" for k, v in sorted(row["described"].items())) or "—"
        rows.append(
            f'<tr><td class="site">{_site(row["site"])}</td><td>{_count(row["total_cases"])}</td>'
            f"<td>{training}</td><td>{validation}</td>"
            f"<td>{_count(row['skipped_cases'])}</td><td><small>{described}</small></td></tr>"
        )
    return (
        '<h2 id="data">Data overview</h2><p class="caption">Counts each site sent: cases from its '
        "description (sent once per run), training cases from its last training round, validation cases "
        "from its last validation. Under the sites' disclosure policy a count between 1 and a site's minimum is "
        "not sent (—), and no voxel-spacing or image-size range is sent (a range is two single cases' values)."
        "</p><table><tr>"
        '<th class="site">Site</th><th>Cases</th><th>Training</th><th>Validation</th><th>Skipped</th>'
        f"<th>Site description</th></tr>{''.join(rows)}</table>"
    )


def _plain(value: object) -> str:
    return f"{value:g}" if isinstance(value, int | float) else escape(str(value))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _percent(share: float | None) -> str:
    return "—" if share is None else f"{100 * share:g} %"


def _count(value: float | None) -> str:
    return "—" if value is None else str(int(value))


def _methods(data: dict) -> str:
    methods = data["methods"]
    conventions = methods["conventions"]
    regions = "".join(
        f"<li><b>{escape(r['name'].upper())}</b> ({escape(r['title'])}): labels {escape(r['labels'])}</li>"
        for r in data["regions"]
    )
    settings = "".join(f"<li><code>{escape(s)}</code></li>" for s in conventions.get(Validation.SETTINGS, []))
    training = "".join(
        f'<tr><td class="site">{escape(k)}</td><td>{escape(str(v))}</td></tr>'
        for k, v in methods["training"].items()
    )
    model = methods["model"]
    model_text = (
        f"{escape(model['architecture'])}, preset <code>{escape(model['preset'])}</code>: channels "
        f"{model['channels']}, strides {model['strides']}, {model['residual_units']} residual units, "
        f"{model['parameters']:,} parameters."
        if model
        else "not recorded"
    )
    coordinator = ", ".join(f"{escape(k)} {escape(v)}" for k, v in methods["coordinator_software"].items())
    sites = "".join(
        f"<li>{_site(site)}: {escape(', '.join(versions))}</li>"
        for site, versions in sorted(methods["site_software"].items())
    )
    differing = (
        f"<p><b>Sites with other metric conventions:</b> {escape(', '.join(methods['sites_with_other_conventions']))}"
        " — their numbers are not comparable with the others'.</p>"
        if methods["sites_with_other_conventions"]
        else ""
    )
    return f"""<h2 id="methods">Methods</h2>
<h3>Validation</h3><p>After every round (round 0: the initial model) each site runs the global model on its own
held-out validation cases (a split the site made once of its own cases and reuses in every run; no run setting
chooses them) by sliding-window inference at the run's spacing,
maps the prediction back onto each case's stored grid (inverse of the preprocessing, nearest neighbour) and measures
it there, in millimetres of the case's own voxel spacing. Regions:</p><ul>{regions}</ul>
<h3>Metric definitions</h3><ul>
<li><b>Dice</b> = 2|P∩T| / (|P| + |T|) for prediction P and label T.</li>
<li><b>HD95</b> (mm): the larger of the two directed 95th percentiles of distances between surface voxels
(MONAI's definition; other tools pool both directions and give different values).</li>
<li><b>Surface Dice</b> at a tolerance of {_num(conventions.get(Validation.NSD_TOLERANCE_MM), 1)} mm: the share of both
surfaces lying within the tolerance of the other surface.</li>
<li><b>Absolute volume difference</b> (mL): |vol(P) − vol(T)|.</li>
<li><b>Sensitivity</b> = |P∩T| / |T|; <b>precision</b> = |P∩T| / |P|.</li>
<li><b>Lesion detection</b>: connected components (26-connectivity); a label lesion is found when a predicted voxel
overlaps it; a predicted lesion overlapping no label voxel is a false lesion; no minimum lesion size.</li></ul>
<h3>Empty masks</h3><p>Both empty: Dice, surface Dice, sensitivity and precision 1, HD95 0. Exactly one empty: those
0 and HD95 = {_num(conventions.get(Validation.HD95_PENALTY_MM), 2)} mm, a BraTS-style penalty (the diagonal of a
240 × 240 × 155 mm volume); the official BraTS evaluation packages use 373 or 374 mm, so HD95 means that include
such cases differ slightly from challenge tables. The number of such cases is reported separately for each site
and region.</p>
<h3>Uncertainty and aggregation</h3><p>Per site: n, mean and a {_percent(conventions.get(Validation.CI_LEVEL))}
percentile-bootstrap confidence interval of the mean ({conventions.get(Validation.BOOTSTRAP_RESAMPLES, "—")}
resamples of the cases, the same resamples for every metric, seeded from a secret the site keeps, so the
coordinator cannot replay them); median and quartiles as Harrell–Davis estimates (a weighted mean of all order
statistics) from a site's <code>{Validation.MIN_POSITION_CASES}</code> on. Pooled values are means over all cases
of the reporting sites (site means weighted by their case counts).</p>
{_disclosure(conventions)}
<h3>Exact settings used by the sites</h3><ul>{settings}</ul>{differing}
<h3>Model and training</h3><p>{model_text} {escape(methods["aggregation"])}.</p>{_training_methods(data["training"])}
<table><tr><th class="site">Run setting</th><th>Value</th></tr>{training}</table>
<h3>Software</h3><p>Coordinator: {coordinator}.</p><ul>{sites}</ul>"""


def _training_methods(training: dict) -> str:
    strategy, privacy = training["strategy"], training["privacy"]
    parts = [
        (
            "Every random draw of a round at a site (patch order and sampling, augmentation) is seeded from the run "
            "seed, the round and the site, so a run repeats exactly on a CPU."
        ),
        (
            f"Weights travelled as {escape(strategy['transport_dtype'])} in both directions; training and aggregation "
            "ran in float32. Bytes per round are measured on the messages the coordinator sent and received."
        ),
    ]
    if strategy["min_lesion_mm3"] > 0:
        parts.append(
            "Post-processing at validation: connected components (26-connectivity) of the predicted tumor (labels "
            f"1–3 together) smaller than {strategy['min_lesion_mm3']:g} mm³ were set to background before measuring "
            "(scipy.ndimage, as for lesion counting). <code>site predict</code> does not post-process."
        )
    if privacy["enabled"]:
        epsilons = ", ".join(f"r{e['round']} {e['epsilon']:.2f}" for e in privacy["epsilon"]) or "—"
        parts.append(
            "Central differential privacy (Flower's server-side fixed clipping): each site's update is clipped to "
            f"L2 norm {privacy['clipping_norm']:g}, the sites' clipped updates are averaged with equal weights and "
            f"Gaussian noise of σ = {privacy['noise_multiplier']:g} × clipping norm / number of sites is added. ε at "
            f"δ = {privacy['delta']:g} from Flower's RDP accountant (site-level, add-or-remove-one, no sampling "
            f"amplification), cumulative after each round: {epsilons}."
        )
    return "<p>" + " ".join(parts) + "</p>"


def _disclosure(conventions: dict) -> str:
    """The disclosure policy the sites applied (site_app/disclosure/policy.py), as their conventions state it."""
    decimals = ", ".join(escape(str(d)) for d in conventions.get(Validation.RELEASE_DECIMALS, [])) or "—"
    policy = escape(str(conventions.get(Validation.DISCLOSURE_POLICY, "site_app/disclosure/policy.py")))
    return f"""<h3>Disclosure control at the sites</h3><p>Every number in this report was released by a site under
its own disclosure policy (<code>{policy}</code>), which follows statistical disclosure control practice for outputs
leaving a trusted environment (DataSHIELD, ACRO/SACRO, Eurostat RDC guidelines). Thresholds are each site's own
settings; the coordinator cannot lower them.</p><ul>
<li>Threshold: no number about fewer than <code>{NodeConfig.MIN_REPORT_CASES}</code> validation cases (default
{DEFAULT_MIN_REPORT_CASES}); no weights from fewer than <code>{NodeConfig.MIN_TRAIN_CASES}</code> training cases
(default {DEFAULT_MIN_TRAIN_CASES}).</li>
<li>No minimum, maximum or other single-case value (hence no voxel-spacing ranges); median and quartiles only from
<code>{NodeConfig.MIN_POSITION_CASES}</code> cases on (default {DEFAULT_MIN_POSITION_CASES}; ACRO's threshold for
position statistics), as Harrell–Davis estimates, never one case's value.</li>
<li>Rounding (decimal places per metric): {decimals}.</li>
<li>Differencing: {escape(str(conventions.get(Validation.VALIDATION_SET, "—")))}.</li>
<li>Local-only baseline (run setting <code>local-baseline</code>): only the means and CIs of the local-only model
and of the paired difference global − local-only, over the same released validation cases, rounded alike; the
local-only model itself never leaves the site.</li>
<li>Run settings outside a site's limits (spacing, patch size, samples per case, batch size, local epochs, resampled
volume size) are refused by the site.</li></ul>"""


def _limitations(data: dict) -> str:
    items = "".join(f"<li>{escape(note)}</li>" for note in data["limitations"])
    return f'<h2 id="limitations">Limitations</h2><ul>{items}</ul>'
