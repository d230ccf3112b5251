"""How the node's own result objects (SR, SEG, key images) are marked.

The stages write these markers (``workers.results.identity``); the receiver reads them
(:attr:`scp_node.dicomio.InstanceMeta.is_own_result`) so that a result sent back to the
node does not reopen the study it belongs to.
"""

from __future__ import annotations

#: This Manufacturer and one of these series numbers mark a result of the node.
RESULT_MANUFACTURER = "spinenode project"
RESULT_SERIES_NUMBERS = frozenset({9901, 9902, 9903})
