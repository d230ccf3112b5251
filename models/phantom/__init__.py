"""Synthetic spine studies with known answers (``spinenode phantom``).

Anatomy is sampled in 3D patient coordinates (:mod:`.anatomy`), pathology as
continuous geometric causes whose grades follow from thresholds (:mod:`.pathology`),
images are rendered by evaluating analytic shapes on each slice grid
(:mod:`.render`), written as DICOM (:mod:`.dicom`) and ground truth in the RSNA 2024
layout (:mod:`models.rsna`) by :mod:`.generate`.

Public entry points: :func:`models.phantom.generate.generate_dataset`,
:func:`models.phantom.generate.generate_study`,
:func:`models.phantom.pathology.sample_truth`, :class:`models.phantom.config.PhantomConfig`.
"""
