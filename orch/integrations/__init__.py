"""Clients of the services the orchestrator works with (the June TODO MCP service)."""
