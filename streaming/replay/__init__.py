"""Replaying topics and files through the learner core to evaluate models, and rebuilding model versions."""
