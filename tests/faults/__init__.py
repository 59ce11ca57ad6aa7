"""Fault injection: each module breaks one thing the orchestrator depends on and
proves the defence holds (README, "Guarantees")."""
