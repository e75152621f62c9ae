"""The site's ClientApp with, inside its masking mod, a test mod that keeps each plaintext train reply (test only).

Built from the site's own handlers and mods (site_app.app) in the same order, plus `keep_plaintext` innermost:
the train reply it sees is the one the masking mod then masks, which is what a secure-aggregation test compares
the wire and the coordinator's model with. Everything the site sends is captured as capturing_clientapp.py does.
The site of partition `secagg-fails-partition` (run config, -1: none) fails when asked to unmask: it has sent
its masked vector and is gone before the coordinator can remove the masks.
"""

import itertools
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import Key, Stage
from flwr.common.serde import message_to_proto

from models.shared.node_config import NodeConfig
from models.shared.wire import CROSS_EVALUATE, DESCRIBE, LOCAL_MODEL, Record
from site_app import app as site
from site_app.disclosure.error_details import keep_details_local
from site_app.local_dp import add_local_noise
from site_app.packed_wire import packed_weights
from site_app.update_masking import mask_update

_count = itertools.count()


def _partition(context: Context) -> int:
    return int(context.node_config[NodeConfig.PARTITION_ID])


def _folder(context: Context, name: str) -> Path:
    folder = Path(str(context.run_config["capture-dir"])) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def fail_at_unmask(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    secagg = msg.content.config_records.get(Record.SECAGG)
    unmasking = secagg is not None and secagg.get(Key.STAGE) == Stage.UNMASK
    if unmasking and _partition(context) == int(context.run_config.get("secagg-fails-partition", -1)):
        raise RuntimeError("this site died after sending its masked vector")
    return call_next(msg, context)


def keep_plaintext(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    reply = call_next(msg, context)
    if msg.metadata.message_type == "train" and not reply.has_error():
        name = f"{_partition(context)}-train-{next(_count)}.bin"
        (_folder(context, "plaintext") / name).write_bytes(message_to_proto(reply).SerializeToString())
    return reply


inner = ClientApp(
    mods=[keep_details_local, packed_weights, fail_at_unmask, mask_update, keep_plaintext, add_local_noise]
)
inner.query(DESCRIBE)(site.describe)
inner.train()(site.train)
inner.evaluate()(site.evaluate)
inner.query(LOCAL_MODEL)(site.local_model)
inner.query(CROSS_EVALUATE)(site.cross_evaluate)


class CapturingClientApp(ClientApp):
    def __call__(self, message: Message, context: Context) -> Message:
        reply = inner(message=message, context=context)
        name = f"{_partition(context)}-{message.metadata.message_type}-{next(_count)}.bin"
        (_folder(context, "sent") / name).write_bytes(message_to_proto(reply).SerializeToString())
        return reply


app = CapturingClientApp()
