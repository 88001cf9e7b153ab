"""PLASA-Bench: the library behind evaluator.py.

Importing the package imports nothing heavy: the parent process (which owns limits and static
checks) never imports torch or a candidate; torch lives in the worker's modules.
"""
