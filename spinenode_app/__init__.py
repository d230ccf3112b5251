"""The application: the ``spinenode`` command, the node supervisor and the demo. The only floor
that imports the receiver (``scp_node``) and the stages (``workers``)."""
