"""Training, evaluation and export of the CAM network (Gondal et al., ICIP 2017).

Research tool, not a medical device.
"""

__version__ = "0.1.0"
