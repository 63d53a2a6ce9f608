"""The screening unit: capture, quality gate, preprocessing, LiteRT inference, regions, display, records.

Research tool, not a medical device. This package never imports TensorFlow, Keras or ``trainer``;
hardware libraries are imported only inside their adapters.
"""

__version__ = "0.1.0"
