"""The site's own ClientApp, unchanged, except that some simulated sites corrupt their training reply (test only).

By partition id (sites in folder order): 0 honest; 1 a wrong-shape array; 2 every array float64; 3 its records
renamed; 4 `num-examples` far above its case count. Everything else (describe, evaluate) is the real site's.
"""

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from models.packed_weights import pack_content, unpack_content
from site_app.app import app as site_app


def wrong_shape(content: RecordDict) -> RecordDict:
    arrays = content["arrays"]
    first = next(iter(arrays.keys()))
    content["arrays"] = ArrayRecord(
        {k: (Array(np.zeros((3, 3), np.float32)) if k == first else a) for k, a in arrays.items()}
    )
    return content


def float64(content: RecordDict) -> RecordDict:
    content["arrays"] = ArrayRecord(
        {k: Array(a.numpy().astype(np.float64)) for k, a in content["arrays"].items()}
    )
    return content


def renamed(content: RecordDict) -> RecordDict:
    return RecordDict({"weights": content["arrays"], "results": content["metrics"]})


def too_many_cases(content: RecordDict) -> RecordDict:
    content["metrics"]["num-examples"] = 10**12
    return content


FAULTS = {1: wrong_shape, 2: float64, 3: renamed, 4: too_many_cases}


class MisbehavingClientApp(ClientApp):
    def __call__(self, message: Message, context: Context) -> Message:
        reply = site_app(message=message, context=context)
        fault = FAULTS.get(int(context.node_config["partition-id"]))
        if message.metadata.message_type != "train" or reply.has_error() or fault is None:
            return reply
        # the site controls its own packing: the fault is in the weights it packs, not in the packing
        return Message(pack_content(fault(unpack_content(reply.content))), reply_to=message)


app = MisbehavingClientApp()
