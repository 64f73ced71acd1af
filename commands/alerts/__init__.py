"""Alerts (Event Grid, Azure Monitor, local monitors), their cards and lifecycle; model
monitoring and drift; security posture."""
