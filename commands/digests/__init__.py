"""Scheduled model-health digests: what they gather, their card, when they are due."""
