"""A 64-bit hash of each string of an Arrow array, computed on its buffers (no Python object per
value): how the CSV bundle's keys are found across batches (:mod:`core.ingest.csv_bundle.keys`)
and how a load keeps the encounters it wrote (:mod:`core.ingest.loader`). Not stored: the
hashes that outlive an import are :func:`core.store.queries.patient_hashes`."""

import numpy as np
import pyarrow as pa

_MIX1, _MIX2, SEED = np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53), np.uint64(0x9E3779B97F4A7C15)


def mix(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection that spreads every input bit), in place."""
    h ^= h >> np.uint64(33)
    h *= _MIX1
    h ^= h >> np.uint64(33)
    h *= _MIX2
    h ^= h >> np.uint64(33)
    return h


def hash_text(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A 64-bit hash of each string, computed on the Arrow buffers (no Python object per value):
    the UTF-8 bytes, zero-padded to 8-byte words, are folded word by word with :func:`mix`."""
    arr = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    arr = arr.cast(pa.large_string())
    n = len(arr)
    if not n:
        return np.empty(0, dtype=np.uint64)
    _, offsets_buffer, data_buffer = arr.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=np.int64, count=n + 1, offset=arr.offset * 8)
    lengths = np.diff(offsets)
    width = max(8, -(-int(lengths.max()) // 8) * 8)
    padded = np.zeros((n, width), dtype=np.uint8)
    if data_buffer is not None and offsets[-1] > offsets[0]:
        text = np.frombuffer(data_buffer, dtype=np.uint8)[offsets[0] : offsets[-1]]
        if (lengths == lengths[0]).all():
            padded[:, : lengths[0]] = text.reshape(n, int(lengths[0]))
        else:
            rows = np.repeat(np.arange(n), lengths)
            padded[rows, np.arange(len(text)) - np.repeat(offsets[:-1] - offsets[0], lengths)] = text
    words = padded.view(np.uint64)
    h = mix(lengths.astype(np.uint64) + SEED)
    for k in range(words.shape[1]):
        h = mix(h ^ words[:, k])
    return h
