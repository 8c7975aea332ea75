"""Parameter-efficient transfer: attach a small adapter (peft's LoRA / DoRA / LoHa / LoKr / IA3, or our bottleneck
adapters) to a frozen base and train it with the new head. Where adapters go is asked of the model (`targets`).

May import the top-level leaves and `models`.
"""
