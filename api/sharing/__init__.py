"""Conversations shared read-only with one person or with everyone on this Hearth; those it is
shared with read it and may continue it as their own copy (a fork)."""
