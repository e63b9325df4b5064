"""Mechanisms every layer shares: progress reporting and crash-safe file writes. Imports nothing else of labkit."""
