"""The result builders the encode stage runs, in order: one line per result kind.

A new kind of result object is a builder module in this package (a function
``(EncodeInputs, ResultIdentity) -> Dataset | None``; workers/results/builder.py) and
one line here, besides its ``ResultKind`` value (docs/architecture.md, "where to add").
"""

from __future__ import annotations

from typing import Final

from workers.results import keyimages, seg, sr
from workers.results.builder import ResultBuilder
from workers.results.identity import ResultKind

BUILDERS: Final[tuple[ResultBuilder, ...]] = (
    ResultBuilder(ResultKind.SR, sr.build_result),
    ResultBuilder(ResultKind.SEG, seg.build_result),
    ResultBuilder(ResultKind.KEY_IMAGES, keyimages.build_result),
)
