"""One module per destination scheme (``dimse``, ``stow``), registered by scheme in
``spinenode/core/destinations.py``; ``base`` holds what they share."""
