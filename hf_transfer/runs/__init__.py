"""Runs on disk: what a finished run leaves (`saving`, `adapter_files`, `card`, `plots`), pushing it to the Hub
(`push`), and using it afterwards (`inference`, `predict`, `evaluate`), in a fresh process.

May import the top-level leaves, `models`, `data` and `adapters`; never the training engine or the pipeline.
"""
