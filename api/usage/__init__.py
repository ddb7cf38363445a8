"""Usage and quotas: what each person used (counted by hearth.usage), their limits, and the
admission step every way of asking for work calls before it queues anything."""
