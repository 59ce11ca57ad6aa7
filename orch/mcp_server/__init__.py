"""An MCP server for June agents: ``june-orchestrator mcp``.

Any MCP client (Claude Code, Claude Desktop, an agent framework) becomes a June agent
with a few lines of configuration: the server speaks MCP over stdio, acts for one
agent of the orchestrator over its REST API, and sends that agent's heartbeats in the
background for the life of the session. The modules:

* ``entry`` — the command line, the environment, the session's lifetime (no ``mcp``
  import until it serves, so ``--help`` works without the optional extra);
* ``session`` — ``AgentSession``: what each tool does, over ``orch.client``;
* ``refusals`` — the text a model reads when the orchestrator refuses a call;
* ``tools`` — the tools' descriptions and JSON schemas on the SDK's ``MCPServer``.

Needs the optional extra: ``pip install 'june-orchestrator[mcp]'``.
"""
