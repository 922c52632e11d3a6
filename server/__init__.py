"""hibiki server: trio tasks, connections, hub, writer, reaper, HTTP app, CLI."""
