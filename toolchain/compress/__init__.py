"""Smaller Keras models: pruning (prune.py) and knowledge distillation (distill.py).

Their results are ordinary Keras models for `invoke build`. channels.py rebuilds a model with fewer
channels (structured pruning, the distillation student's width); common.py holds what both share.
"""
