"""One service: its supervisor, lifecycle, control commands and health."""
