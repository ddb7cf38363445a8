"""`hearth`: the command line. `hearth users …` administers accounts (straight in Redis, on the
server); `hearth batch …` is a client of the api like any other, over HTTP."""
