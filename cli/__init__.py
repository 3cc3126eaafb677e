"""The ``date-edit`` command line (installed as the ``date_edit_cli`` package)."""
