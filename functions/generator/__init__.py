"""Seeded, offline synthetic card transactions with fraud scenarios, drift and delayed labels."""
