"""spinenode: the application (``spinenode_app``) and the shared core (``spinenode.core``).

The receiver (``scp_node``) and the stages (``workers``) stand between them; ``models`` is the
ground floor (docs/architecture.md).
"""

__version__ = "0.1.0"
