"""What the admin app's routes share: settings, database, the task sender, broker depths,
the receiver's counters and the access policy. Its own module so that the app and the
dashboard both import it and neither imports the other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scp_node.admin.access import Access
from spinenode.core.db.session import Database
from scp_node.scheduler import Enqueue
from spinenode.core.settings import Settings


@dataclass
class AdminContext:
    settings: Settings
    db: Database
    enqueue: Enqueue
    depths: Callable[[], dict[str, int | None]]
    counters: Any = None  # scp_node.scp.ScpCounters or scp_node.counters.SharedScpCounters
    access: Access = field(init=False)

    def __post_init__(self) -> None:
        self.access = Access(self.settings)
