"""Room events to live subscribers: the bus and this process's hub."""
