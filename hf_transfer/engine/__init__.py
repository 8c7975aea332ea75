"""The training engine: `Trainer` with the toolkit's optimizer rules (absolute per-group learning rates, weight
decay only where it belongs), schedules, the gradual-unfreezing callback, how a pretrained body and a new head
train together, checkpoint loading under today's parameter names, work shared across ranks, throughput and
the console's progress lines.

May import the top-level leaves and `models`.
"""
