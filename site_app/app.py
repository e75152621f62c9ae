"""The site's ClientApp: Flower glue only. Each handler reads the message once (site_app.site_message), calls the
one function that builds its reply (site_app.round_replies), and replies.

Message, record and key names come from models.shared.wire. What a reply may carry is the disclosure policy's
(site_app.disclosure.policy); an error's details stay in the site's log (keep_details_local); under secure
aggregation the site's update leaves only masked (site_app.update_masking).
"""

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from models.shared.wire import CROSS_EVALUATE, DESCRIBE, LOCAL_MODEL
from site_app.disclosure.error_details import keep_details_local
from site_app.local_dp import add_local_noise
from site_app.packed_wire import packed_weights
from site_app.round_replies import (
    cross_evaluate_reply,
    describe_reply,
    evaluate_reply,
    local_model_reply,
    round_reply,
)
from site_app.site_message import SiteMessage
from site_app.update_masking import mask_update

app = ClientApp(mods=[keep_details_local, packed_weights, mask_update, add_local_noise])
"""Mods, outermost first: errors keep their details at the site; weights arrive and leave packed as one array
(site_app.packed_wire), every other mod and handler sees them by name; a secure-aggregation round's train reply
is masked (site_app.update_masking) before anything leaves; with the site's local DP its update is clipped and
noised (site_app.local_dp) before that."""


@app.query(DESCRIBE)
def describe(msg: Message, context: Context) -> Message:
    """Who the site says it is, its min-report-cases and an aggregate overview of its data."""
    return Message(describe_reply(SiteMessage.read(msg, context)), reply_to=msg)


@app.train()
def train(msg: Message, context: Context) -> Message:
    """One round of local training on the global model: weights and loss, or why the site's policy stops it; first
    the global model's validation when the instruction asks for it too (one message per round)."""
    return Message(round_reply(SiteMessage.read(msg, context)), reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Validation of the global model on the site's own cases: aggregates, or none under the site's policy."""
    return Message(evaluate_reply(SiteMessage.read(msg, context)), reply_to=msg)


@app.query(LOCAL_MODEL)
def local_model(msg: Message, context: Context) -> Message:
    """The site's local-only model, only with its own consent (the cross-site matrix)."""
    return Message(local_model_reply(SiteMessage.read(msg, context)), reply_to=msg)


@app.query(CROSS_EVALUATE)
def cross_evaluate(msg: Message, context: Context) -> Message:
    """Validation of another consenting site's local-only model: aggregates only, with this site's consent."""
    return Message(cross_evaluate_reply(SiteMessage.read(msg, context)), reply_to=msg)
