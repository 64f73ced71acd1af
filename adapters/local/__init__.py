"""The embedded local workspace: an `MLService` on SQLite (`workspace`), its monitors and
security posture, and the demo data that seeds it."""
