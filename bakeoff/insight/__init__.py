"""Insight a team acts on: what to do next with the data, not only which model won.

Three plain reports, each from artifacts that already exist (cached features, predictions.parquet, the manifest),
so they cost seconds and read no image except the few they show:

* :mod:`bakeoff.insight.learning_curve`: accuracy against images per class -> "will labelling more images help?"
* :mod:`bakeoff.insight.label_issues`: images whose given label the data disagrees with (confident learning)
* :mod:`bakeoff.insight.error_report`: one candidate's worst test mistakes, confused pairs, per-class numbers

:mod:`bakeoff.insight.gallery` holds the shared HTML pieces (escaped text, inline thumbnails).
"""
