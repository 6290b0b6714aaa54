"""Checks against the real AUTOMATIC1111 and Forge WebUIs (see harness.py)."""
