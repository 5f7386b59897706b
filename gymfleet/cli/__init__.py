"""Command-line faces of gymfleet: ``gymfleet ...`` and the NeMo Gym compatible ``ng_*`` commands."""
