"""Changes: what a change is (`change`), what each does (`kinds`), the gate that decides
(`gate`, `policy`, `ratelimit`), approvals and their cards and evidence, the audit trail,
and what follows a change (watches and verdicts, job watches)."""
