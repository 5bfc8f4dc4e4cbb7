"""Serving the champion with MLflow's own tools: the logged model's code, its logging, and nothing heavy at import.

* ``image_classifier``: the models-from-code file logged INTO every model (encoded image bytes in, label and
  ``prob_<class>`` out); standalone: it never imports bakeoff, so a model loads where bakeoff is not installed;
* ``log``: log a model folder (model.keras + model.json) as that MLflow model, with MLflow's tensorflow flavor on
  the same network, and register it.

Export to SavedModel/TFLite/ONNX is ``bakeoff.export``; the KServe manifests are in ``infra/k8s/base/serving``.
"""
