"""Site-local normalization keeps the norm layers at the site; the local-only baseline's aggregates are paired
and computed like every other statistic; the report turns them into a verdict per site."""

import logging

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord

from models.baseline_keys import GAIN_PREFIX, LOCAL_PREFIX, baseline_key
from models.norm_layers import norm_state_names, shared_state_names
from models.presets import build_model
from models.weights import to_record
from server_app.report_training import sharp_drops, verdict
from site_app.aggregates import site_aggregates
from site_app.local_baseline import LocalBaseline, baseline_aggregates
from site_app.local_norm import LocalNorm
from site_app.validation import CaseEvaluation

REGIONS = ("wt", "tc", "et")


def test_the_models_norm_layers_are_affine_instance_norms_named_once():
    model = build_model("tiny", seed=0)
    names = norm_state_names(model)
    assert names and all(n.endswith((".weight", ".bias")) and ".adn.N." in n for n in names)
    assert set(shared_state_names(model, True)) == set(model.state_dict()) - names
    assert shared_state_names(model, False) == list(model.state_dict())


def test_local_norm_sends_no_norm_layer_and_puts_the_sites_own_back(tmp_path):
    norm = LocalNorm(True, tmp_path)
    site_model = build_model("tiny", seed=1)
    names = norm_state_names(site_model)
    with torch.no_grad():
        for name, value in site_model.state_dict().items():
            if name in names:
                value.add_(0.5)  # as if trained at this site
    norm.keep(site_model, 1)
    sent = norm.outgoing(site_model)
    assert not names & set(sent.keys())

    incoming = ArrayRecord(
        {k: v for k, v in to_record(build_model("tiny", seed=2)).items() if k not in names}
    )
    personalized = build_model("tiny")
    norm.personalize(personalized, incoming)
    state = personalized.state_dict()
    for name in names:
        assert torch.equal(state[name], site_model.state_dict()[name])
    for name in incoming:
        assert np.array_equal(state[name].numpy(), incoming[name].numpy())

    with pytest.raises(ValueError, match="carries norm layers"):
        norm.personalize(build_model("tiny"), to_record(build_model("tiny", seed=2)))


def test_without_local_norm_every_weight_is_shared(tmp_path):
    norm = LocalNorm(False, tmp_path)
    model = build_model("tiny", seed=1)
    assert set(norm.outgoing(model).keys()) == set(model.state_dict())
    norm.keep(model, 1)
    assert not norm.path.exists()


def case(case_id: str, dice: float, hd95: float) -> CaseEvaluation:
    metrics = {f"{m}-{r}": v for r in REGIONS for m, v in (("dice", dice), ("hd95", hd95))}
    metrics |= {f"{m}-{r}": 0.5 for r in REGIONS for m in ("nsd", "avd", "sensitivity", "precision")}
    metrics |= {f"{c}-{r}": 0 for r in REGIONS for c in ("empty-both", "empty-pred", "empty-truth")}
    metrics |= {f"{c}-{r}": 1 for r in REGIONS for c in ("lesions-tp", "lesions-fp", "lesions-fn")}
    empty = np.zeros((2, 2, 2))
    return CaseEvaluation(case_id, (1.0, 1.0, 1.0), metrics, empty, empty, empty)


def test_baseline_aggregates_are_the_sites_aggregates_of_the_local_model_and_of_the_paired_difference():
    rng = np.random.default_rng(0)
    global_dice = rng.uniform(0.5, 0.9, 12)
    local_dice = global_dice - rng.uniform(0.0, 0.1, 12)  # the global model better on every case
    global_cases = [case(f"c{i}", d, 5.0) for i, d in enumerate(global_dice)]
    local_cases = [case(f"c{i}", d, 7.0) for i, d in reversed(list(enumerate(local_dice)))]  # any order

    values = baseline_aggregates(global_cases, local_cases, REGIONS, seed=3)

    spacings = [c.spacing_mm for c in global_cases]
    local = site_aggregates(
        [c.metrics for c in sorted(local_cases, key=lambda c: int(c.case_id[1:]))], spacings, list(REGIONS), 3
    )
    assert values[baseline_key(LOCAL_PREFIX, "dice", "wt", "mean")] == pytest.approx(local["dice-wt-mean"])
    assert values[baseline_key(LOCAL_PREFIX, "dice", None, "ci-low")] == pytest.approx(
        local["dice-mean-ci-low"]
    )
    gain = values[baseline_key(GAIN_PREFIX, "dice", None, "mean")]
    assert gain == pytest.approx(float(np.mean(global_dice - local_dice)))
    low, high = (values[baseline_key(GAIN_PREFIX, "dice", None, s)] for s in ("ci-low", "ci-high"))
    assert 0 < low < gain < high  # paired: every per-case difference is positive, so is the whole interval
    assert values[baseline_key(GAIN_PREFIX, "hd95", "et", "mean")] == pytest.approx(-2.0)
    assert all(isinstance(v, float) for v in values.values())


def test_baseline_aggregates_need_a_case_measured_with_both_models():
    with pytest.raises(ValueError, match="both"):
        baseline_aggregates([case("a", 0.5, 1.0)], [case("b", 0.5, 1.0)], REGIONS, seed=0)


def test_the_local_only_model_starts_from_the_initial_weights_and_keeps_training(tmp_path):
    baseline = LocalBaseline(True, tmp_path, "tiny")
    initial = to_record(build_model("tiny", seed=4))
    seen: list[dict] = []

    def train(model, _optimizer):
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        with torch.no_grad():
            next(model.parameters()).add_(1.0)
        return 0.25, None

    log = logging.getLogger("test")
    assert baseline.train_round(initial, 1, train, log) == 0.25
    assert all(np.array_equal(seen[0][k].numpy(), initial[k].numpy()) for k in initial)
    baseline.train_round(to_record(build_model("tiny", seed=9)), 2, train, log)  # the global model is ignored
    first = next(iter(seen[0]))
    assert torch.equal(seen[1][first], seen[0][first] + 1.0)
    assert LocalBaseline(False, tmp_path / "off", "tiny").train_round(initial, 1, train, log) is None


def test_the_verdict_says_helped_worse_or_no_evidence():
    point = {"round": 5, "n_cases": 6, "gain": 0.06, "gain_ci": [0.02, 0.10]}
    assert (
        verdict("hospital-b", point)
        == "federation helped hospital-b: +0.060 Dice [+0.020, +0.100] at round 5, n = 6"
    )
    assert verdict("hospital-b", {**point, "gain": -0.05, "gain_ci": [-0.09, -0.01]}).startswith(
        "hospital-b did better alone"
    )
    assert "no evidence" in verdict("hospital-b", {**point, "gain_ci": [-0.01, 0.10]})
    assert "no evidence" in verdict("hospital-b", {**point, "n_cases": 1, "gain_ci": [0.06, 0.06]})


def test_sharp_drops_of_the_pooled_dice_are_found():
    pooled = [{"round": r, "dice-mean": d} for r, d in enumerate([0.1, 0.4, 0.05, 0.3, 0.28, 0.2])]
    assert [d["round"] for d in sharp_drops(pooled)] == [2, 5]


def test_post_processing_removes_isolated_specks_below_the_volume_and_keeps_tumors_whole():
    from site_app.postprocess import remove_small_lesions

    prediction = np.zeros((20, 20, 20), dtype=np.int64)
    prediction[2:10, 2:10, 2:10] = 2  # a tumor of 512 voxels …
    prediction[5:7, 5:7, 5:7] = 3  # … with a small enhancing core inside
    prediction[15, 15, 15] = 3  # an isolated speck of 1 voxel
    prediction[15:17, 2:4, 2:4] = 1  # 8 voxels
    cleaned = remove_small_lesions(prediction, (2.0, 2.0, 2.0), min_mm3=64.0 + 1)  # 8 voxels = 64 mm³
    assert cleaned[15, 15, 15] == 0 and not cleaned[15:17, 2:4, 2:4].any()
    assert np.array_equal(cleaned[:12, :12, :12], prediction[:12, :12, :12])
    assert remove_small_lesions(prediction, (2.0, 2.0, 2.0), 0.0) is prediction
