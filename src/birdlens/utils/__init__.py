"""Small helpers shared by every stage: atomic writes, seeding, environment capture."""
