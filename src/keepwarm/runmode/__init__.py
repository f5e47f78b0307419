"""Run mode: plan, distribute, run once, benchmark, install, data."""
