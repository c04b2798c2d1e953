"""An ``.npy`` file written piece by piece, for index arrays whose length is known only at the
end: memory stays bounded by a piece."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np


class NpyAppender:
    """Appends values of one dtype to ``path`` (through ``path`` with suffix ``.raw``, which
    becomes the ``.npy`` file when the block ends without an error, and is removed either
    way)."""

    def __init__(self, path: Path, dtype: Any) -> None:
        self.path = path
        self.dtype = np.dtype(dtype)
        self.raw = path.with_suffix(".raw")
        self.file = self.raw.open("wb")
        self.count = 0

    def __enter__(self) -> NpyAppender:
        return self

    def append(self, values: np.ndarray) -> None:
        values = np.asarray(values)
        if self.dtype.kind in "iu" and values.size:
            limits = np.iinfo(self.dtype)
            if values.min() < limits.min or values.max() > limits.max:
                raise ValueError(f"{self.path.name}: values outside {self.dtype}")
        self.file.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.count += len(values)

    def __exit__(self, *exc: object) -> None:
        self.file.close()
        try:
            if exc[0] is None:
                header = {
                    "descr": np.lib.format.dtype_to_descr(self.dtype),
                    "fortran_order": False,
                    "shape": (self.count,),
                }
                with self.path.open("wb") as out, self.raw.open("rb") as data:
                    np.lib.format.write_array_header_1_0(out, header)
                    shutil.copyfileobj(data, out, 1 << 24)
        finally:
            self.raw.unlink()
