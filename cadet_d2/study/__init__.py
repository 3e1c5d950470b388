"""Ablation studies: a study file (YAML) -> planned runs -> local or SLURM training -> report.

``tools/ablate.py`` is the command line (:mod:`cadet_d2.study.cli`); docs/study.md the guide.
"""
from .plan import Arm, Plan, Run, make_plan
from .spec import Study, StudyError, load_study

__all__ = ["Arm", "Plan", "Run", "Study", "StudyError", "load_study", "make_plan"]
