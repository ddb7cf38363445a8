"""Jobs as the api sees them: fair admission to the queues, their events, cancelling, and the housekeeping that files and reaps ended ones."""
