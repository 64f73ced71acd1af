"""What every command is built on: the declaration (`@command`), the turn's context and
Reply, card parts, and links to Azure ML studio."""
