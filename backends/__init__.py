"""Inference engines, each behind the Backend interface in base.py."""
