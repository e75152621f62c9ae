"""What may leave the site: a ClientApp mod that keeps exception details (paths, case ids) local.

Flower would otherwise send `str(exception)` to the coordinator as the error reason. Here the full
error goes to the site log in the work folder; the coordinator, and stderr (which a simulation streams to
the coordinator's log), get only the exception's type.
"""

import math
import sys
import traceback

from flwr.app import Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable

from site_app.settings.identity import resolve_site
from site_app.site_log import site_logger

ERROR_CODE_SITE_FAILED = 2  # flwr ErrorCode.CLIENT_APP_RAISED_EXCEPTION


def keep_details_local(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Run the handler; on failure reply with a reason that names no file, case or value."""
    try:
        reply = call_next(msg, context)
        _refuse_non_finite(reply)
    except Exception as error:  # noqa: BLE001 - every failure must be reported without details
        detail = "".join(traceback.format_exception(error))
        try:
            site_logger(resolve_site(context).work).error("%s failed:\n%s", msg.metadata.message_type, detail)
            print(
                f"[oncofed site] {msg.metadata.message_type} failed ({type(error).__name__}); see the site log",
                file=sys.stderr,
            )
        except Exception:  # noqa: BLE001 - the site's paths themselves are what failed: no case data is involved
            print(f"[oncofed site] {msg.metadata.message_type} failed:\n{detail}", file=sys.stderr)
        reason = failure_reason(msg.metadata.message_type, error)
        return Message(Error(code=ERROR_CODE_SITE_FAILED, reason=reason), reply_to=msg)
    return reply


def failure_reason(kind: str, error: BaseException) -> str:
    """What the coordinator learns of a failure: the phase and the exception's type, no file, case or value."""
    return f"site failed in {kind} ({type(error).__name__}); details are in the site log"


def _refuse_non_finite(reply: Message) -> None:
    """A NaN or inf would poison the federation's averages; refuse to send it."""
    if reply.has_error():
        return
    for record in reply.content.metric_records.values():
        for key, value in record.items():
            values = value if isinstance(value, list) else [value]
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"refusing to send non-finite metric {key!r}")
