"""One reply for a round's two answers: a site's training of round r and its validation of round r − 1.

When a round needs one message per site (run config `round-messages` one), the train instruction of round r
carries the global model round r − 1 ended with and asks for its validation too (models.shared.wire.EVALUATE_ROUND).
The site's reply holds both answers as they would have travelled alone, in separate records: the train reply's
(ARRAYS + METRICS, or TRAINING) and the evaluate reply's (VALIDATION, and its METRICS renamed VALIDATION_METRICS
so that the two METRICS records do not collide). The site fuses, the coordinator splits, both with this module.
"""

from flwr.app import ConfigRecord, RecordDict

from models.shared.wire import Record, Status, Validation

VALIDATION_RECORDS = {Record.VALIDATION: Record.VALIDATION, Record.VALIDATION_METRICS: Record.METRICS}
"""Record name in a fused reply → its name in an evaluate reply."""


def fuse_round_reply(training: RecordDict, validation: RecordDict) -> RecordDict:
    """The train reply's records and the evaluate reply's, the latter under their fused names."""
    fused_names = {alone: fused for fused, alone in VALIDATION_RECORDS.items()}
    unexpected = set(validation.keys()) - set(fused_names)
    if unexpected or set(training.keys()) & set(VALIDATION_RECORDS):
        raise ValueError(
            f"cannot fuse a reply holding records {sorted(unexpected) or sorted(training.keys())}"
        )
    return RecordDict(
        {**dict(training.items()), **{fused_names[name]: record for name, record in validation.items()}}
    )


def split_round_reply(content: RecordDict) -> tuple[RecordDict, RecordDict]:
    """(the train reply, the evaluate reply) a fused reply holds, each with the records it would have had alone;
    what a reply holds beyond them stays in the train part, where the train reply's checks name it."""
    training = RecordDict({name: r for name, r in content.items() if name not in VALIDATION_RECORDS})
    validation = RecordDict(
        {alone: content[fused] for fused, alone in VALIDATION_RECORDS.items() if fused in content}
    )
    return training, validation


def failed_validation(reason: str) -> RecordDict:
    """The validation part of a fused reply whose validation raised: the training part still stands (as a failed
    evaluate message leaves the train message's reply alone); `reason` names the error's type only."""
    return RecordDict(
        {Record.VALIDATION: ConfigRecord({Validation.STATUS: Status.FAILED, Validation.REASON: reason})}
    )


def validation_failure(validation: RecordDict) -> str | None:
    """The reason of a fused reply's failed validation part (exactly a VALIDATION record with status failed)."""
    if set(validation.keys()) != {Record.VALIDATION}:
        return None
    record = validation[Record.VALIDATION]
    if record.get(Validation.STATUS) != Status.FAILED:
        return None
    return str(record.get(Validation.REASON, "the site's validation failed"))
