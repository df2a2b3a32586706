"""Getting events into Kafka: the producer SDK, row sources (files, River datasets) and feeding them to
Kafka (``rivulet produce``), and topic administration."""
