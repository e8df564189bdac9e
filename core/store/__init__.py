"""The store: SQLModel tables (``models``), the engine and schema upgrades (``db``), months
(``months``) and the read queries pages and the CLI share (``queries``)."""
