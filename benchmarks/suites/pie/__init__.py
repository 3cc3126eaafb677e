"""PIE-Bench in the harness: its loader and the editors' published settings (``data``), its seven metrics
(``metrics``), its table (``report``) and the suite that runs it (``suite``)."""
