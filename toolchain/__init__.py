"""edgeyard: take a trained model to an embedded target.

The package is the engine; tasks.py is a thin Invoke face over it. Importing this package must stay
cheap: TensorFlow and TVM are imported inside the functions that need them.
"""

__version__ = "0.1.0"
