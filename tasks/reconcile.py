"""The reconciliation task; see ``tasks.reconciling`` for what it repairs."""
