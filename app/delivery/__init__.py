"""Delivery: the outbox sender and its channels (email, webhooks)."""
