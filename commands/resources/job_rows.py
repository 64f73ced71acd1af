"""Job rows and status colours, shared by the job and batch endpoint cards (no commands here)."""

from __future__ import annotations

from adapters.service import Job
from commands.base.ui import button, columns, plain, text, when

STATUS_COLORS = {"Completed": "Good", "Failed": "Attention", "Canceled": "Warning", "NotResponding": "Attention"}


def status_text(job: Job) -> dict:
    return text(f"**{job.status}**", color=STATUS_COLORS.get(job.status))


def job_row(job: Job) -> dict:
    title = plain(job.display_name or job.name)
    detail = " · ".join(p for p in (f"id {job.name}" if job.display_name and job.display_name != job.name else "",
                                    job.type, job.experiment, when(job.created_at)) if p)
    return columns([text(f"**{title}**"), text(detail, subtle=True, spacing="None")], status_text(job),
                   {"type": "ActionSet", "actions": [button("Details", "job", job.name)]},
                   widths=["stretch", "auto", "auto"])
