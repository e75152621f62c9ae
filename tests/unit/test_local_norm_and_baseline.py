"""Site-local normalization keeps the norm layers at the site; the local-only baseline's aggregates are paired,
computed like every other statistic and sent only under the site's disclosure policy; the report turns them into
a verdict per site."""

import logging

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord
from monai.networks.nets import UNet

from models.model_source import ModelSourceError, checkpoint_norm_meta, inference_meta, load_model_source
from models.norm_layers import norm_state_names, shared_state_names
from models.presets import build_model, network_arguments
from models.shared.labels import evaluation_regions
from models.shared.run_config import defaults
from models.shared.wire import (
    BASELINE_STATS,
    GAIN_PREFIX,
    LOCAL_ONLY_PREFIX,
    N_CASES,
    NUM_EXAMPLES,
    PERSONALIZED_OVER_LOCAL_PREFIX,
    PERSONALIZED_PREFIX,
    Record,
    Status,
    Validation,
    baseline_key,
    is_count,
    is_pooled_mean,
    withholdable,
)
from models.weights import save_checkpoint, to_record
from server_app.report.training_summary import sharp_drops, verdict
from site_app.disclosure.aggregates import site_aggregates
from site_app.disclosure.validation_replies import KeptModel, ValidationPolicy, evaluation_content
from site_app.learning.local_baseline import LocalBaseline, baseline_aggregates
from site_app.learning.local_norm import LocalNorm
from site_app.learning.validation import CaseEvaluation
from site_app.settings.run_settings import SiteRunSettings

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

    values = baseline_aggregates(global_cases, local_cases, REGIONS, bootstrap_seed=3)

    ordered = sorted(local_cases, key=lambda c: int(c.case_id[1:]))
    local = site_aggregates([c.metrics for c in ordered], list(REGIONS), 3, min_position_cases=99)
    assert values[baseline_key(LOCAL_ONLY_PREFIX, "dice", "wt", "mean")] == local["dice-wt-mean"]
    assert values[baseline_key(LOCAL_ONLY_PREFIX, "dice", None, "ci-low")] == local["dice-mean-ci-low"]
    gain = values[baseline_key(GAIN_PREFIX, "dice", None, "mean")]
    assert gain == pytest.approx(float(np.mean(global_dice - local_dice)), abs=5e-4)  # released to 0.001
    low, high = (values[baseline_key(GAIN_PREFIX, "dice", None, s)] for s in ("ci-low", "ci-high"))
    assert 0 < low < gain < high  # paired: every per-case difference is positive, so is the whole interval
    assert values[baseline_key(GAIN_PREFIX, "hd95", "et", "mean")] == pytest.approx(-2.0)
    assert all(isinstance(v, float) for v in values.values())


def test_baseline_keys_hold_only_rounded_means_and_cis_and_are_never_pooled():
    values = baseline_aggregates(
        [case(f"c{i}", 0.5 + i / 97, 5.0) for i in range(12)],
        [case(f"c{i}", 0.4 + i / 89, 9.0) for i in range(12)],
        REGIONS,
        bootstrap_seed=1,
    )
    assert all(key.endswith(BASELINE_STATS) for key in values)  # no median, quartile, minimum or count
    assert all(round(v, 3) == v for k, v in values.items() if "dice" in k)  # R5: Dice to 0.001
    assert not any(is_pooled_mean(k) or is_count(k) for k in values)  # the coordinator never pools them


def test_a_local_only_set_other_than_the_released_cases_is_refused():
    # The attack: a baseline over the released set minus one case would let two numbers give that case away (R6)
    released = [case(f"c{i}", 0.6, 5.0) for i in range(6)]
    with pytest.raises(ValueError, match="exactly the released"):
        baseline_aggregates(released, released[:-1], REGIONS, bootstrap_seed=0)
    with pytest.raises(ValueError, match="exactly the released"):
        baseline_aggregates(released[:-1], released, REGIONS, bootstrap_seed=0)


def reply_policy(minimum: int) -> ValidationPolicy:
    settings = SiteRunSettings.from_run_config({**defaults(), "sim-min-report-cases": minimum})
    return ValidationPolicy.for_site(settings, {"partition-id": 0, "num-partitions": 1})


def test_the_baseline_leaves_only_in_a_reported_reply_and_is_withheld_without_a_local_model():
    policy = reply_policy(5)
    assert evaluation_regions("brats").keys() == set(REGIONS)
    results = [case(f"c{i}", 0.5 + i / 50, 5.0) for i in range(6)]
    local = KeptModel.local_only([case(f"c{i}", 0.5, 6.0) for i in range(6)])
    reported = evaluation_content(results, 0, policy, 7, [local])
    metrics = reported[Record.METRICS]
    assert reported[Record.VALIDATION][Validation.STATUS] == Status.REPORTED
    assert metrics[baseline_key(GAIN_PREFIX, "dice", None, "mean")] > 0
    assert metrics[N_CASES] == metrics[NUM_EXAMPLES] == 6  # the same cases, no second count

    few = evaluation_content(results[:4], 0, policy, 7, [KeptModel.local_only(local.results[:4])])
    assert not few.metric_records  # below min-report-cases: no baseline number either

    none_yet = evaluation_content(results, 0, policy, 7, [KeptModel.local_only(None)])
    assert not any(k.startswith((LOCAL_ONLY_PREFIX, GAIN_PREFIX)) for k in none_yet[Record.METRICS])
    assert any(
        "local-only baseline (no local-only model" in w for w in none_yet[Record.VALIDATION]["withheld"]
    )


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
    from site_app.learning.postprocess import remove_small_lesions

    prediction = np.zeros((20, 20, 20), dtype=np.int64)
    prediction[2:10, 2:10, 2:10] = 2  # a tumor of 512 voxels …
    prediction[5:7, 5:7, 5:7] = 3  # … with a small enhancing core inside
    prediction[15, 15, 15] = 3  # an isolated speck of 1 voxel
    prediction[15:17, 2:4, 2:4] = 1  # 8 voxels
    cleaned = remove_small_lesions(prediction, (2.0, 2.0, 2.0), min_mm3=64.0 + 1)  # 8 voxels = 64 mm³
    assert cleaned[15, 15, 15] == 0 and not cleaned[15:17, 2:4, 2:4].any()
    assert np.array_equal(cleaned[:12, :12, :12], prediction[:12, :12, :12])
    assert remove_small_lesions(prediction, (2.0, 2.0, 2.0), 0.0) is prediction


def checkpoint_meta() -> dict[str, object]:
    return {"model_preset": "tiny", "round": 1, **inference_meta(2.0, 32)}


def test_predict_refuses_the_coordinators_local_norm_model_and_takes_the_sites_own(tmp_path):
    record = to_record(build_model("tiny", seed=1))
    run_model = tmp_path / "run" / "models" / "final.pt"
    save_checkpoint(record, run_model, {**checkpoint_meta(), **checkpoint_norm_meta(True)})
    with pytest.raises(ModelSourceError, match=r"local-norm.*WORK/models/global-latest\.pt"):
        load_model_source(run_model)
    site_model = tmp_path / "work" / "models" / "global-latest.pt"
    save_checkpoint(record, site_model, {**checkpoint_meta(), **checkpoint_norm_meta(True, site=True)})
    assert load_model_source(site_model).build() is not None


def test_a_model_saved_before_the_norm_layers_were_affine_predicts_as_it_did(tmp_path):
    old = UNet(**{**network_arguments("tiny"), "norm": "instance"}).eval()  # no scale or shift
    path = tmp_path / "old.pt"
    save_checkpoint(ArrayRecord(old.state_dict()), path, checkpoint_meta())
    new = load_model_source(path).build()
    image = torch.randn(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(new(image), old(image))


def test_with_a_personalized_model_the_site_sends_personalized_minus_local_only_paired():
    policy = reply_policy(5)
    results = [case(f"c{i}", 0.5, 5.0) for i in range(6)]
    local = KeptModel.local_only([case(f"c{i}", 0.4, 6.0) for i in range(6)])
    personalized = KeptModel.personalized([case(f"c{i}", 0.7 + i / 100, 4.0) for i in range(6)])
    metrics = evaluation_content(results, 0, policy, 7, [local, personalized])[Record.METRICS]
    key = baseline_key(PERSONALIZED_OVER_LOCAL_PREFIX, "dice", None, "mean")
    personalized_mean = metrics[baseline_key(PERSONALIZED_PREFIX, "dice", None, "mean")]
    local_mean = metrics[baseline_key(LOCAL_ONLY_PREFIX, "dice", None, "mean")]
    assert metrics[key] == pytest.approx(personalized_mean - local_mean, abs=0.002)
    low = metrics[baseline_key(PERSONALIZED_OVER_LOCAL_PREFIX, "dice", None, "ci-low")]
    assert 0 < low <= metrics[key]
    assert withholdable(key) and not is_pooled_mean(key)

    alone = evaluation_content(results, 0, policy, 7, [local])[Record.METRICS]
    assert not any(k.startswith(PERSONALIZED_OVER_LOCAL_PREFIX) for k in alone)
