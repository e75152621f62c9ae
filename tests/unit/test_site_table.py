"""The coordinator's per-site table shows the regions the sites evaluated, whatever `eval-regions` the run used."""

from models.shared.wire import MEAN_DICE, stat_key
from server_app.report.site_table import region_names, site_table_text


def record(site: str, regions: list[str], conventions: bool) -> dict:
    metrics = {MEAN_DICE: 0.5, **{stat_key("dice", r, "mean"): 0.25 * (i + 1) for i, r in enumerate(regions)}}
    metrics[stat_key("hd95", regions[0], "median")] = 12.5
    return {
        "round": 1,
        "site": site,
        "status": "reported",
        "n_cases": 4,
        "metrics": metrics,
        "conventions": {"regions": regions} if conventions else {},
    }


def test_regions_come_from_the_sites_conventions():
    records = [record("a", ["label1", "label2", "label3"], conventions=True)]
    assert region_names(records) == ["label1", "label2", "label3"]
    text = site_table_text(records)
    assert "LABEL1" in text and "LABEL3" in text and "HD95 LABEL1 mm" in text and "WT" not in text


def test_without_conventions_the_regions_are_read_from_the_metric_keys():
    assert region_names([record("a", ["tc", "et"], conventions=False)]) == ["tc", "et"]
    assert region_names([]) == []
