"""One member site of a simulated federation poisons the global model; what the other sites end up with.

The federation runs in this process (bench/in_process.py: the real ServerApp and ClientApps, unchanged). The last
site is the attacker: a member whose replies are crafted, not a change to the product. It describes itself with
10^6 usable cases and claims them in every train reply (so plain FedAvg gives it almost all the weight), and
poisons its update in one of three ways (ATTACKS):

    scaled          its honest update × 100 (model replacement)
    sign-flipped    its honest update × −100 (gradient ascent on the federation's loss)
    swapped-labels  it trains, as an honest site would, on its own cases with their labels permuted
                    (background → edema, necrotic core → enhancing, edema → background, enhancing → necrotic
                    core: `SWAP`); the update is sent as trained

The measure is the global model's pooled mean Dice over the honest sites' validation cases in the last round
(`honest_pooled_dice`), and the site with the largest update norm in each round (`largest_norm_sites`).
"""

import functools
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message
from in_process import InProcessGrid, run_federation

from data_prep.synth.federation import write_federation
from models.packed_weights import pack_content, unpack_content
from models.shared.run_config import SIM_DATA, SIM_WORK
from models.shared.wire import MEAN_DICE, NUM_EXAMPLES, Overview, Record, Status
from models.transport import decode

N_SITES = 4
CLAIMED = 10**6
"""The usable cases the attacker describes and the `num-examples` it claims."""
SCALE = {"scaled": 100.0, "sign-flipped": -100.0, "swapped-labels": 1.0}
"""Attack → the factor its update (weights − the global model it was sent) is multiplied by."""
ATTACKS = tuple(SCALE)
SWAP = np.array([2, 3, 0, 1], dtype=np.uint8)
"""Label → the label the swapped-labels attacker trains on (BraTS labels 0-3)."""


def attacker_node(n_sites: int = N_SITES) -> int:
    """The last site's node (bench/in_process.py numbers the partitions from 101)."""
    return 101 + n_sites - 1


class PoisoningGrid(InProcessGrid):
    """Carries every message as InProcessGrid does; the attacker's describe and train replies are crafted."""

    def __init__(
        self, contexts: dict[int, Context], attack: str, attacker_config: dict | None = None
    ) -> None:
        super().__init__(contexts)
        self.attack = attack
        self.attacker = max(contexts)
        if attacker_config is not None:  # the attacker's own (poisoned) data and work folders
            own = contexts[self.attacker]
            contexts[self.attacker] = Context(
                run_id=own.run_id,
                node_id=own.node_id,
                node_config=own.node_config,
                state=own.state,
                run_config={**own.run_config, **attacker_config},
            )

    def _deliver(self, message: Message) -> Message:
        reply = super()._deliver(message)
        if message.metadata.dst_node_id != self.attacker or reply.has_error():
            return reply
        content = unpack_content(
            reply.content
        )  # the attacker crafts its weights, then packs them as a site does
        if Record.OVERVIEW in content.metric_records:
            content[Record.OVERVIEW][Overview.N_CASES_USABLE] = CLAIMED
        if Record.ARRAYS in content.array_records and Record.ARRAYS in message.content.array_records:
            content[Record.ARRAYS] = scaled_update(
                decode(message.content[Record.ARRAYS]), decode(content[Record.ARRAYS]), SCALE[self.attack]
            )
            content[Record.METRICS][NUM_EXAMPLES] = CLAIMED
        reply.content = pack_content(content)
        return reply


def scaled_update(sent: ArrayRecord, trained: ArrayRecord, factor: float) -> ArrayRecord:
    """`sent` + factor × (`trained` − `sent`) for float arrays; the others (counters) as trained."""
    if factor == 1.0:
        return trained
    return ArrayRecord(
        {
            name: Array(sent[name].numpy() + factor * (array.numpy() - sent[name].numpy()))
            if np.dtype(array.dtype).kind == "f"
            else array
            for name, array in trained.items()
        }
    )


def swapped_label_federation(data: Path, out: Path) -> Path:
    """A copy of the federation `data` in which the last site's labels are permuted by SWAP (images linked, the
    other sites linked as they are): the swapped-labels attacker's own data. Written once (under a temporary name,
    then renamed), reused by later runs."""
    if out.is_dir():
        return out
    sites = sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    attacker = sites[-1]
    if not (attacker / "labelsTr").is_dir():
        raise ValueError(f"{attacker}: the swapped-labels attacker needs a NIfTI site (imagesTr/, labelsTr/)")
    partial = out.with_name(f".{out.name}-{os.getpid()}")
    (partial / attacker.name / "labelsTr").mkdir(parents=True)
    for site in sites[:-1]:
        (partial / site.name).symlink_to(site.resolve(), target_is_directory=True)
    (partial / attacker.name / "imagesTr").symlink_to(
        (attacker / "imagesTr").resolve(), target_is_directory=True
    )
    for label in sorted((attacker / "labelsTr").glob("*.nii.gz")):
        image = nib.load(label)
        swapped = SWAP[np.asarray(image.dataobj, dtype=np.uint8)]
        nib.save(
            nib.Nifti1Image(swapped, image.affine, image.header),
            partial / attacker.name / "labelsTr" / label.name,
        )
    try:
        partial.rename(out)
    except OSError:  # written meanwhile by another run
        shutil.rmtree(partial)
    return out


def attacked_grid(attack: str | None, data: Path, out: Path) -> Callable[[dict[int, Context]], InProcessGrid]:
    """The grid that runs the federation: honest (attack None) or with the last site attacking."""
    if attack is None:
        return InProcessGrid
    if attack not in SCALE:
        raise ValueError(f"unknown attack {attack!r}; choose one of: {', '.join(ATTACKS)}")
    own = None
    if attack == "swapped-labels":
        own = {
            SIM_DATA.key: str(swapped_label_federation(data, out / "swapped-labels-data")),
            SIM_WORK.key: str(out / "swapped-labels-work"),
        }
    return functools.partial(PoisoningGrid, attack=attack, attacker_config=own)


def run(data: Path, work: Path, run_dir: Path, config: dict[str, object], attack: str | None) -> Path:
    """One federated run of the N_SITES sites of `data` (work folders under `work`), attacked or not."""
    grid = attacked_grid(attack, data, work.parent)
    return run_federation(data, run_dir, work, config, N_SITES, grid)


def write_data(data: Path, preset: str, seed: int = 0) -> Path:
    """The N_SITES-site synthetic federation the runs share."""
    if not data.is_dir():
        write_federation(data, n_sites=N_SITES, seed=seed, preset=preset)
    return data


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def honest_pooled_dice(run_dir: Path, attacker: str | None) -> float:
    """The case-weighted mean Dice of the last validated round over every site but `attacker` (None: all)."""
    reported = [
        r
        for r in records(run_dir)
        if r["site"] != attacker
        and r.get("status") == Status.REPORTED
        and MEAN_DICE in (r.get("metrics") or {})
    ]
    last = max(r["round"] for r in reported)
    final = [r for r in reported if r["round"] == last]
    cases = sum(r["n_cases"] for r in final)
    return sum(r["metrics"][MEAN_DICE] * r["n_cases"] for r in final) / cases


def largest_norm_sites(run_dir: Path) -> list[str]:
    """The site with the largest recorded update norm in each training round, in round order."""
    rounds: dict[int, list[dict]] = {}
    for record in records(run_dir):
        if isinstance(record.get("update-norm"), int | float):
            rounds.setdefault(record["round"], []).append(record)
    return [max(rounds[r], key=lambda record: record["update-norm"])["site"] for r in sorted(rounds)]


def norms(run_dir: Path) -> dict[str, list[float]]:
    """Site → its recorded update norms, in round order."""
    by_site: dict[str, list[float]] = {}
    for record in sorted(records(run_dir), key=lambda r: r["round"]):
        if isinstance(record.get("update-norm"), int | float):
            by_site.setdefault(record["site"], []).append(record["update-norm"])
    return by_site


def report_outlier(run_dir: Path) -> str | None:
    """The site the run's report.json names as sending the largest update."""
    largest = _updates(run_dir).get("largest")
    return largest["site"] if largest else None


def report_least_aligned(run_dir: Path) -> str | None:
    """The site the run's report.json names as sending the update least aligned with the round's median one."""
    least = _updates(run_dir).get("least_aligned")
    return least["site"] if least else None


def cosines(run_dir: Path) -> dict[str, list[float]]:
    """Site → its updates' recorded cosines with the round's median update, in round order."""
    by_site: dict[str, list[float]] = {}
    for record in sorted(records(run_dir), key=lambda r: r["round"]):
        if isinstance(record.get("update-cosine"), int | float):
            by_site.setdefault(record["site"], []).append(record["update-cosine"])
    return by_site


def _updates(run_dir: Path) -> dict:
    return json.loads((run_dir / "report.json").read_text()).get("training", {}).get("updates", {})
