"""A checksum of every table of a store, to prove that something left the store exactly as it was.

``table_checksums(engine)`` hashes each table's rows in primary-key order; two stores (or one
store before and after) are equal table by table when their dicts are equal. Tests compare
``table_checksums(engine, skip=BOOKKEEPING)`` when an accepted import may only add its own
bookkeeping (the ``import_run`` row, the data-version settings, its patients, the effect its derive measured
and the patients it marked for the next derive).
"""

import hashlib

from sqlalchemy import Engine, select
from sqlmodel import SQLModel

BOOKKEEPING = ("import_run", "app_setting", "import_patient", "import_effect", "derive_touched")


def table_checksums(engine: Engine, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """``{table: "<rows>:<sha256 of the rows>"}`` for every table of the models but ``skip``."""
    out = {}
    with engine.connect() as conn:
        for table in SQLModel.metadata.sorted_tables:
            if table.name in skip:
                continue
            digest, n = hashlib.sha256(), 0
            for row in conn.execute(select(table).order_by(*table.primary_key.columns)):
                digest.update(repr(tuple(row)).encode())
                n += 1
            out[table.name] = f"{n}:{digest.hexdigest()}"
    return out
