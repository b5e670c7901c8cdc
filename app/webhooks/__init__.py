"""Webhooks: per-project subscriptions to cycle state changes, labelled batches and spent
budgets, signed with HMAC-SHA256, delivered with retries from an outbox the database fills
in the same transaction as the change (triggers, migration 0011)."""
