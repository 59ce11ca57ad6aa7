"""One module per area; each resource validates, calls the facade and shapes the answer."""
