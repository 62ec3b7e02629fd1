"""sr_watch: event sources, readiness, memory, announcements, daemon."""
