"""Experiment configs, one file per experiment: ``--config=configs/FILE.py[:ARG]`` from the repository
root, or the file's full path from anywhere (``jtransfer.configs_path``). Files share pieces as
modules: ``from configs import common``."""
