"""Key hashes: a 64-bit hash of each key computed on the Arrow buffers, and :class:`Keys`, the keys
of a file other files refer to, looked up by binary search and confirmed on the values."""


import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.ingest.csv_bundle.batch import as_mask, index_in
from core.ingest.text_hash import SEED, hash_text, mix


def key_hash(raw: dict[str, pa.ChunkedArray], key: tuple[str, ...]) -> np.ndarray:
    """The hash of each row's key (one or more columns)."""
    h = hash_text(raw[key[0]])
    for column in key[1:]:
        h = mix(h * SEED ^ hash_text(raw[column]))
    return h


class Keys:
    """The key values of one file other files refer to: the hashes sorted once, so each batch is
    looked up by binary search; a hit is confirmed on the values themselves when they are kept."""

    def __init__(self, hashes: np.ndarray, values: pa.Array | None, positions: bool):
        """``hashes``: of each row's key, in file order (sorted in place when neither ``values`` nor
        ``positions`` are asked for: then only membership is known)."""
        if positions or values is not None:
            self.order = np.argsort(hashes, kind="stable")
            self.sorted = hashes[self.order]
        else:
            hashes.sort()
            self.order, self.sorted = None, hashes
        self.values = values
        # Two rows with one hash (a duplicate key, or a collision): look up the values instead.
        self.by_value = values is not None and bool((self.sorted[1:] == self.sorted[:-1]).any())

    def positions(self, values: pa.ChunkedArray) -> np.ndarray:
        """Row (0-based, in file order) of each value; -1 when absent."""
        if self.by_value:
            return index_in(values, self.values)
        if not len(self.sorted):
            return np.full(len(values), -1, dtype=np.int64)
        h = hash_text(values)
        at = np.minimum(np.searchsorted(self.sorted, h), len(self.sorted) - 1)
        hit = self.sorted[at] == h
        if self.order is None:
            return np.where(hit, 0, -1)  # membership only
        rows = np.where(hit, self.order[at], -1)
        if self.values is not None:
            same = as_mask(pc.equal(values, self.values.take(pa.array(np.maximum(rows, 0)))))
            rows = np.where(same, rows, -1)
        return rows


def has_duplicate_key(raw: dict[str, pa.ChunkedArray], key: tuple[str, ...]) -> bool:
    joined = raw[key[0]]
    for k in key[1:]:
        joined = pc.binary_join_element_wise(joined, raw[k], pa.scalar("\x1f", type=joined.type))
    return pc.count_distinct(joined).as_py() < len(joined)


