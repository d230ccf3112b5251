"""spinenode models: series selection, detection, grading, phantoms, training and evaluation.

This package imports neither ``scp_node`` nor ``workers``.
"""
