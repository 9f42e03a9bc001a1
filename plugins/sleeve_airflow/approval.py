"""The human approval of a canary promotion: the standard provider's ApprovalOperator (Airflow
human-in-the-loop) with its timeout taken from the run's ``approval_timeout_hours`` Param when
the task runs, so nothing is read at parse time and each run can set its own."""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator


class PromotionApproval(ApprovalOperator):
    """Approve / Reject; no answer within the timeout chooses the default, Reject."""

    def __init__(self, **kwargs):
        super().__init__(defaults="Reject", **kwargs)

    def execute(self, context):
        self.response_timeout = timedelta(hours=float(context["params"]["approval_timeout_hours"]))
        return super().execute(context)
