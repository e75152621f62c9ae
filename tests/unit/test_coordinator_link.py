"""`site start` tells the site's admin when the link to the coordinator is lost and when it is back, once each,
from the SuperNode's own retry lines."""

from datetime import datetime

from deploy.site.link import LinkWatch

LOG = [
    "INFO :      SuperNode ID: 42",
    "WARNING :   Connection attempt failed, retrying in 1.06 seconds",
    "WARNING :   Connection attempt failed, retrying in 2.31 seconds",
    "INFO :      Connection successful after 95.20 seconds and 9 tries.",
    "INFO :      Received successfully",
]


def test_one_message_when_lost_and_one_when_back():
    said: list[str] = []
    times = iter([datetime(2026, 1, 5, 14, 2, 11), datetime(2026, 1, 5, 14, 3, 46)])
    watch = LinkWatch("coordinator.example.org:9092", said.append)
    for line in LOG:
        watch.line(line, now=lambda: next(times))
    assert said == [
        (
            "14:02:11 lost the coordinator at coordinator.example.org:9092; Flower keeps trying (training resumes "
            "when it answers)"
        ),
        "14:03:46 the coordinator at coordinator.example.org:9092 answers again (after 95 s)",
    ]
