"""Converters from each RGB-thermal data set's own layout into a cadet_d2 data root.

One module per data set (:mod:`.llvip`, :mod:`.flir`, :mod:`.kaist`, :mod:`.m3fd`), the shared
writer (:mod:`.writer`), VOC reading (:mod:`.voc`), the report (:mod:`.report`) and the
command line (:mod:`.cli`, run as ``tools/convert_dataset.py``).
"""
from .flir import convert_flir
from .kaist import convert_kaist
from .llvip import convert_llvip
from .m3fd import convert_m3fd
from .report import Report
from .writer import Box, Pair, write_root

__all__ = ["Box", "Pair", "Report", "convert_flir", "convert_kaist", "convert_llvip", "convert_m3fd", "write_root"]
