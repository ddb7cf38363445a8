"""People, their API keys and ui sessions: the user store, sign-in and its throttle, and `hearth users`."""
