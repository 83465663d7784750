"""Gradio UI for ProLab Explorer. Layout and thin callbacks only; all ML lives in ``prolab``."""
