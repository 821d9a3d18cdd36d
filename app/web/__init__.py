"""The dashboard: server-rendered pages mounted at `/`, over the domain services."""
