"""Training: state, step, losses, loop. Import the submodules you need (``from jtransfer.train.step import make_train_step``)."""
