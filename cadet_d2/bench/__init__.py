"""Measurements of a detector: training and inference speed and memory (:mod:`.speed`), the
memory planner (:mod:`.planner`), input-pipeline speed (:mod:`.inputs`) and the GPU check
(:mod:`.gpu_check`); ``tools/benchmark.py`` and ``tools/gpu_check.py`` run them."""
