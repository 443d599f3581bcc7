"""Job notifications to a Slack-compatible webhook: claimed exactly once where an event happens (events),
delivered after commit by one process (deliver)."""
