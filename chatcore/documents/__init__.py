"""Attached files: reading text out of them within bounds, and ranking their passages for a question."""
