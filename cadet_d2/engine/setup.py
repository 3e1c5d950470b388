"""Building the config of a run: defaults + cadet keys + YAML + command-line overrides."""
from __future__ import annotations

import argparse
import logging

from detectron2.config import CfgNode, get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_cadet_config, validate_cadet_config
from ..data.datasets import register_from_config
from ..data.ready import check_datasets
from ..evaluation.miss_rate import check_miss_rate_config
from ..modeling.fusion import check_fusion_config
from ..utils.machine import machine_label
from .preflight import check_output_dir


def _merge(cfg: CfgNode, what: str, merge) -> None:
    try:
        merge()
    except FileNotFoundError as e:  # a _BASE_ (the file itself is checked by Detectron2: AssertionError)
        raise FileNotFoundError(f"{what}: its _BASE_ chain names {e.filename}, which does not exist (a _BASE_ "
                                "path is relative to the file that names it)") from None
    except (KeyError, AssertionError) as e:
        # yacs: KeyError "Non-existent config key: X" (file) or AssertionError
        # "Non-existent key: X" (list). Say where it came from and what is close.
        msg = str(e).strip("'\"")
        if "Non-existent" not in msg:
            raise ValueError(f"{what}: {msg}") from None
        key = msg.split(":")[-1].strip()
        raise KeyError(f"{what}: unknown config key {key!r}{_suggest(cfg, key)}") from None


def _suggest(cfg: CfgNode, key: str) -> str:
    import difflib

    def flat(node, prefix=""):
        for k, v in node.items():
            yield from flat(v, f"{prefix}{k}.") if isinstance(v, CfgNode) else [f"{prefix}{k}"]

    close = difflib.get_close_matches(key, list(flat(cfg)), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def load_config(config_file: str = "", opts: list | None = None) -> CfgNode:
    """Defaults, then ``config_file`` (with ``_BASE_`` inheritance), then ``opts``; validated."""
    cfg = get_cfg()
    add_cadet_config(cfg)
    if config_file:
        _merge(cfg, config_file, lambda: cfg.merge_from_file(config_file))
    if opts:
        if len(opts) % 2:
            keys = [o for i, o in enumerate(opts) if i % 2 == 0]
            raise ValueError(f"command line: config overrides come as KEY VALUE pairs, but {len(opts)} words were "
                             f"given (keys read: {keys}): a key lacks its value, or a value has spaces unquoted")
        _merge(cfg, "command line", lambda: cfg.merge_from_list(list(opts)))
    validate_cadet_config(cfg)
    check_fusion_config(cfg)  # registered modules, each module's own keys
    return cfg


def setup(args: argparse.Namespace) -> CfgNode:
    """Config for a ``tools/`` script run, with Detectron2's logging/output set-up and the
    data sets of ``CADET.DATA`` registered."""
    cfg = load_config(args.config_file, args.opts)
    cfg.freeze()
    if comm.is_main_process():
        check_output_dir(cfg.OUTPUT_DIR)  # a clear error before Detectron2 writes config.yaml there
    default_setup(cfg, args)
    setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="cadet_d2", abbrev_name="cadet")
    logging.getLogger("cadet_d2").info(f"[cadet] machine: {machine_label()}")
    register_from_config(cfg)
    check_datasets(cfg, train=not getattr(args, "eval_only", False))  # every test set usable, before training
    check_miss_rate_config(cfg)  # its class is in every test set, before any training
    return cfg
