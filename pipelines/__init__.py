"""The bake-off as one Kubeflow Pipelines v2 DAG: factory, local run, compile, submit, schedule."""
