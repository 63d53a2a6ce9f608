"""Pretrained backbones for the CAM network: a torch-free reader of their weights and their Keras 3 networks."""
