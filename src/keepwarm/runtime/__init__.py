"""One loop: claim, work, publish, heartbeat."""
