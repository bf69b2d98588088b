"""The benchmark harness: variants × datasets × shots × seeds over the one trainer, and its report.

    python -m jtransfer.benchmark --config=configs/benchmark/demo.py --workdir=workdirs/demo
    from jtransfer.benchmark import harness; rows = harness.run(config, "workdirs/demo")
"""
