"""Bad input at full size: an import whose output pipe closes, and a 200 MB mixed NDJSON file
(the small cases of the same checks are in tests/unit/test_bad_input_corpus.py)."""

import subprocess
import sys

from core.derive.pipeline import derive_all
from core.store.queries import derive_pending
from tests.checksum import BOOKKEEPING, table_checksums
from tests.conftest import PROJECT_ROOT
from tests.unit import test_bad_input_corpus as corpus
from tests.unit.test_csv_import import valid_tables, write_bundle

# the corpus's store fixtures: a derived small network, copied for each test
seeded_file, store = corpus.seeded_file, corpus.store


def test_an_import_into_a_closed_pipe_still_derives_everything(store, tmp_path):
    """``python -m core import DIR | head -1``: the reader goes away, the import and its derive finish."""
    engine, url = store
    tables = valid_tables()
    tables["encounters.csv"].append({"encounter_id": "E9", "patient_id": "P1", "kind": "ed_visit", "start_date": "2024-03-05"})
    process = subprocess.Popen([sys.executable, "-m", "core", "import", str(write_bundle(tmp_path / "more", tables)),
                                "--database-url", url], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.close()
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 0, stderr
    assert "Traceback" not in stderr, stderr
    assert derive_pending(engine) is None
    finished = table_checksums(engine, skip=BOOKKEEPING)
    derive_all(engine)
    assert table_checksums(engine, skip=BOOKKEEPING) == finished


def test_a_200_mb_ndjson_file_that_mixes_types_is_streamed(tmp_path):
    corpus.assert_mixed_ndjson_is_streamed(tmp_path, 20_000)
