"""The coordinator's rounds: who is online, what is sent to whom, which replies count, and resuming."""
