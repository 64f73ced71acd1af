"""Azure ML: the `MLService` port over azure-ai-ml (`workspace`), Azure Monitor metrics,
what model monitoring writes, and the events Azure sends (Event Grid, alerts)."""
