"""The bot itself: help, greetings, whoami; roles and grants; the outbox."""
