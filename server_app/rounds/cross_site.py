"""The cross-site generalization matrix: each consenting site's local-only model measured at the other consenting
sites, once, after the last round.

Only sites whose describe reply said they consent (site_app.disclosure.model_sharing; SiteDirectory
.shares_local_model) are asked for their local-only model (query.local_model); a site that did not consent is never
asked, and would refuse anyway. Each model received is relayed to every other consenting site (query.cross_evaluate),
which validates it on its own validation cases and replies with aggregates under its disclosure policy, like an
evaluate reply. The coordinator sees the consenting sites' local-only weights in transit and keeps none of them: only
the cells (model, site where measured) go to the run folder (CROSS_SITE_FILE), for the report
(server_app.report.cross_site_matrix). The global model's row comes from the last round's normal validation.
"""

import math
from collections.abc import Mapping
from logging import INFO, WARNING

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from models.shared.atomic import atomic_write_json
from models.shared.wire import (
    CROSS_EVALUATE_MESSAGE_TYPE,
    LOCAL_MODEL_MESSAGE_TYPE,
    MEAN_DICE,
    MEAN_DICE_CI_HIGH,
    MEAN_DICE_CI_LOW,
    NUM_EXAMPLES,
    SERVER_ROUND,
    Record,
    Status,
    Validation,
    read_status,
)
from server_app.rounds.grid_exchange import exchange
from server_app.rounds.reply_checks import evaluate_reply_problem
from server_app.rounds.site_directory import SiteDirectory
from server_app.run_record.run_folder import CROSS_SITE_FILE, RunFolder

CELL_KEYS = (MEAN_DICE, MEAN_DICE_CI_LOW, MEAN_DICE_CI_HIGH)


def cross_site_matrix(
    grid: Grid,
    directory: SiteDirectory,
    online: Mapping[int, str],
    config: ConfigRecord,
    server_round: int,
    timeout_s: float,
    run: RunFolder,
) -> dict | None:
    """Ask the online consenting sites for their local-only models, relay each to the other consenting sites and
    file the aggregates they send back; None (nothing written) with fewer than two consenting sites online."""
    consenting = {
        node: directory.name(node)
        for node in online
        if directory.knows(node) and directory.name(node) in directory.shares_local_model
    }
    others = sorted(directory.name(n) for n in online if directory.knows(n) and n not in consenting)
    if len(consenting) < 2:
        if consenting:
            log(INFO, "Cross-site matrix: only %s consents; nothing to compare", *consenting.values())
        return None
    base = {**dict(config), SERVER_ROUND: server_round}
    asked = [
        Message(RecordDict({Record.CONFIG: ConfigRecord(base)}), node, LOCAL_MODEL_MESSAGE_TYPE)
        for node in sorted(consenting, key=consenting.get)
    ]
    answers = exchange(grid, asked, timeout_s)
    models: dict[int, ArrayRecord] = {}
    statuses: dict[str, str] = {}
    for node, site in consenting.items():
        reply = answers.replies.get(node)
        arrays, status = _local_model(reply)
        statuses[site] = status
        if arrays is not None:
            models[node] = arrays
        else:
            log(WARNING, "Cross-site matrix: no local-only model from %s: %s", site, status)
    cells = []
    for owner, arrays in sorted(models.items(), key=lambda item: consenting[item[0]]):
        targets = sorted((n for n in consenting if n != owner), key=consenting.get)
        relayed = [
            Message(
                RecordDict({Record.ARRAYS: arrays, Record.CONFIG: ConfigRecord(base)}),
                node,
                CROSS_EVALUATE_MESSAGE_TYPE,
            )
            for node in targets
        ]
        replies = exchange(grid, relayed, timeout_s).replies  # one message per node: a reply names its node
        for node in targets:
            cell = _cell(replies.get(node), directory, node)
            cells.append({"model": consenting[owner], "site": consenting[node], **cell})
    matrix = {
        "round": server_round,
        "consenting": sorted(consenting.values()),
        "not_consenting": others,
        "models": statuses,
        "cells": cells,
    }
    atomic_write_json(run.path / CROSS_SITE_FILE, matrix)  # {consenting, not_consenting, models, cells}
    log(INFO, "Cross-site matrix: %d cells from %d local-only models", len(cells), len(models))
    return matrix


def _local_model(reply: Message | None) -> tuple[ArrayRecord | None, str]:
    """The model a local_model reply carries and "sent", or None and why not (the site's reason)."""
    if reply is None:
        return None, Status.TIMEOUT
    if reply.has_error():
        return None, f"{Status.FAILED} ({reply.error.reason})"
    arrays = reply.content.array_records.get(Record.ARRAYS)
    if arrays is None or not arrays:
        sharing = reply.content.config_records.get(Record.SHARING, {})
        return None, f"{Status.REFUSED} ({sharing.get(Validation.REASON, 'no reason given')})"
    finite = all(math.isfinite(float(v)) for a in arrays.values() for v in a.numpy().ravel()[:1000])
    return (arrays, "sent") if finite else (None, f"{Status.DROPPED} (non-finite weights)")


def _cell(reply: Message | None, directory: SiteDirectory, node: int) -> dict:
    """A cell: the site's mean Dice with its CI and cases, or its status and reason."""
    if reply is None:
        return {"status": Status.TIMEOUT}
    if reply.has_error():
        return {"status": Status.FAILED, "reason": reply.error.reason}
    content = reply.content
    validation = content.config_records.get(Record.VALIDATION, {})
    status = read_status(
        validation.get(Validation.STATUS), (Status.REPORTED, Status.SUPPRESSED, Status.REFUSED)
    )
    if status in (Status.SUPPRESSED, Status.REFUSED):
        return {"status": status, "reason": str(validation.get(Validation.REASON, ""))}
    problem = evaluate_reply_problem(content, directory.usable_cases(node))
    if problem:
        return {"status": Status.DROPPED, "reason": problem}
    metrics = content[Record.METRICS]
    return {
        "status": Status.REPORTED,
        "n_cases": int(metrics[NUM_EXAMPLES]),
        **{key: float(metrics[key]) for key in CELL_KEYS if key in metrics},
    }
