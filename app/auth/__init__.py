"""Sign-in for the dashboard: one-time login links and server-side browser sessions."""
