"""bakeoff: a transfer-learning bake-off of ImageNet backbones, tracked in MLflow, orchestrated by Kubeflow Pipelines.

The core package is plain Python on paths and URIs; it never imports kfp. Heavy libraries
(TensorFlow, MLflow) are imported inside the functions that need them so the CLI starts fast.
"""

__version__ = "0.1.0"
