"""Azure ML resources, read and changed: endpoints and their traffic splits, rollouts,
models and their lifecycle, jobs, schedules and compute, the feature store."""
