"""The parties' protocol logic (requester, data owner, processor), free of any transport."""
