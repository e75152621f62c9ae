"""The site's own ClientApp, unchanged, with every reply it returns also written to disk (test only).

A reply returned by the ClientApp object is exactly what Flower sends to the coordinator, so wrapping the
whole object (its mods included) captures every Message a site sends. Files: <capture-dir>/<partition-id>-
<message type>-r<round>-<n>.bin, each a serialized flwr Message protobuf.
"""

import itertools
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.common.serde import message_to_proto

from models.shared.node_config import NodeConfig
from models.shared.wire import SERVER_ROUND, Record
from site_app.app import app as site_app

_count = itertools.count()


class CapturingClientApp(ClientApp):
    def __call__(self, message: Message, context: Context) -> Message:
        reply = site_app(message=message, context=context)
        folder = Path(str(context.run_config["capture-dir"]))
        folder.mkdir(parents=True, exist_ok=True)
        config = message.content.config_records.get(Record.CONFIG, {})
        name = (
            f"{context.node_config[NodeConfig.PARTITION_ID]}-{message.metadata.message_type}"
            f"-r{config.get(SERVER_ROUND, 'na')}-{next(_count)}-{message.metadata.message_id[:8]}.bin"
        )
        (folder / name).write_bytes(message_to_proto(reply).SerializeToString())
        return reply


app = CapturingClientApp()
