"""What every recipe shares: the typed recipe arguments (`arguments`: defaults < YAML < command line / keywords) and
the steps `training` runs for each recipe: prepare (validate everything, write nothing), train, evaluate, save.

May import everything below it: the leaves, `models`, `data`, `engine`, `adapters`, `features`, `runs`.
"""
