"""Knowledge distillation: a student (often built from the teacher's own blocks, `student`) learns from a teacher's
softened class probabilities (`distillation`), and the report that puts the two side by side (`report`).

May import the leaves, `models`, `data`, `engine`, `adapters` and `runs` (a teacher is a saved run).
"""
