"""What a run found, at a glance: a self-contained HTML report of a results store.

:func:`depth_summary` reduces the small per-well variables (fitted defocus,
sharpness, PSNR/SSIM) to one row per depth; :func:`write_report` writes
``index.html`` (one file: figures embedded as PNG, no network, no scripts
beyond one line that marks the page ready) and ``summary.md``:

- the run's status (complete, or how many wells are done, failed, pending);
- plate heat maps on the physical plate's full layout (every row and column,
  empty wells blank, pending wells hatched, failed wells crossed) of the
  fitted |defocus| per depth and of the sharpness gain per depth;
- per-depth quality curves and the per-depth table;
- one well's recovered OTF profiles with the fit band (where the data carry
  signal) marked, and its PSFs;
- input beside refocused for the most and the least improved fields (against
  the other fields at the same depth) and for flagged fields (the input
  planes from the source plate, opened read-only; the refocused from the
  results);
- the wells table and the flagged fields (:mod:`plate_refocus.tables`).

Only the small variables and the few planes shown are read.

Modules: :mod:`.summary` (opening a store for a report, the run's progress,
the per-depth summary), :mod:`.layout` (the physical plate and the heat-map
grids), :mod:`.montage` (choosing and reading the planes shown), :mod:`.page`
(the HTML and :func:`write_report`); the figures are drawn by
:mod:`plate_refocus.figures`.
"""

from __future__ import annotations

from .layout import MAX_MAP_PANELS as MAX_MAP_PANELS  # the report's size limits, as before
from .layout import plate_layout
from .montage import MONTAGE_PLANES as MONTAGE_PLANES
from .montage import MONTAGE_SIZE as MONTAGE_SIZE
from .page import write_report
from .summary import DepthRow, depth_summary, format_summary, open_for_report, progress_line

__all__ = [
    "DepthRow",
    "depth_summary",
    "format_summary",
    "open_for_report",
    "plate_layout",
    "progress_line",
    "write_report",
]
