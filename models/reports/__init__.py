"""Level-by-level labels read from free-text radiology reports (``spinenode labels-from-reports``).

Rule- and vocabulary-based, no network and no learned model: :mod:`.vocabulary` loads the
words it knows (``vocabulary.toml``), :mod:`.levels` reads level mentions and ranges,
:mod:`.parser` turns a report into :class:`.parser.Label` records (condition, level, grade,
confidence, the sentence it came from), :mod:`.labels` reads the reports CSV and writes the
RSNA 2024 layout, :mod:`.score` measures per-field precision and recall against known truth,
and :mod:`.phantom` writes reports from phantom ground truth in many phrasings (development
templates in :mod:`.templates_dev`, held-out ones in :mod:`.templates_heldout`).
See docs/reports.md.
"""
