"""Processes and their files: instances, supervisor, logs, health, process identity and
titles, sr_police."""
