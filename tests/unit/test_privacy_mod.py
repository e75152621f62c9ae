"""A failing site tells the coordinator the kind of failure, never its details."""

from flwr.app import Context, Message, MetricRecord, RecordDict

from site_app.disclosure.error_details import keep_details_local


def context(tmp_path) -> Context:
    data = tmp_path / "data"
    data.mkdir()
    node = {"data-path": str(data), "work-path": str(tmp_path / "work"), "site-name": "hospital-x"}
    return Context(run_id=1, node_id=7, node_config=node, state=RecordDict(), run_config={})


def test_exception_details_stay_in_the_site_log(tmp_path, flower_task):
    request = Message(RecordDict(), dst_node_id=7, message_type="train")

    def handler(msg, ctx):
        raise ValueError("case patient-4711 in /secret/hospital/export/scan.dcm is broken")

    reply = keep_details_local(request, context(tmp_path), handler)
    assert reply.has_error()
    assert "patient-4711" not in reply.error.reason and "/secret" not in reply.error.reason
    assert "ValueError" in reply.error.reason
    assert "patient-4711" in (tmp_path / "work" / "logs" / "site.log").read_text()


def test_non_finite_metrics_are_not_sent(tmp_path, flower_task):
    request = Message(RecordDict(), dst_node_id=7, message_type="evaluate")

    def handler(msg, ctx):
        return Message(
            RecordDict({"m": MetricRecord({"dice-mean": float("nan"), "num-examples": 3})}), reply_to=msg
        )

    reply = keep_details_local(request, context(tmp_path), handler)
    assert reply.has_error()
