"""The long-running processes: the feature worker and its publisher, the learner, the embedded stack,
the demo and the supervised local stack (``rivulet up``)."""
