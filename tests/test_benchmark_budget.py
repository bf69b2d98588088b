"""Budget rules (BiT-HyperRule's published numbers and their batch scaling, the epochs floor and
cap), the convergence flag on hand-made curves, and the metric records it reads from a real run."""

import pytest
import support as testing

from jtransfer import optim
from jtransfer import workdir as wd
from jtransfer.benchmark import budget
from jtransfer.train import config as config_lib
from jtransfer.train import trainer, writers

# google-research/big_transfer, bit_hyperrule.get_schedule: (warm-up, decays..., end) at batch 512.
SMALL, MEDIUM, LARGE = (100, 200, 300, 400, 500), (500, 3000, 6000, 9000, 10_000), (
    500, 6000, 12_000, 18_000, 20_000)


@pytest.mark.parametrize("n,supports,mixup", [
    (1, SMALL, 0.0), (1_000, SMALL, 0.0), (19_999, SMALL, 0.0),
    (20_000, MEDIUM, 0.1), (499_999, MEDIUM, 0.1),
    (500_000, LARGE, 0.1), (1_281_167, LARGE, 0.1),
])
def test_bit_hyperrule_at_its_own_batch_is_the_published_rule(n, supports, mixup):
  b = budget.rule("bit_hyperrule", n_train=n, batch_size=512, image_size=224)
  assert (b.warmup_steps, *b.lr_boundaries, b.steps) == supports
  assert b.mixup_alpha == mixup and b.decay_factor == 0.1
  assert (b.resize, b.resolution) == (512, 480)
  assert b.lr == 0.003 and b.lr_scale == 1.0


@pytest.mark.parametrize("size,expected", [
    (28, (160, 128)), (32, (160, 128)), (95, (160, 128)), ((95, 96), (160, 128)),
    (96, (512, 480)), (224, (512, 480)), ((64, 200), (512, 480)),
])
def test_bit_resolution_goes_by_the_image_area(size, expected):
  b = budget.rule("bit_hyperrule", n_train=5_000, batch_size=512, image_size=size)
  assert (b.resize, b.resolution) == expected


@pytest.mark.parametrize("n,batch", [(5_000, 16), (5_000, 128), (50_000, 128), (2_000_000, 1024),
                                     (50_000, 24)])
def test_bit_hyperrule_scaled_to_a_batch_keeps_the_examples_seen(n, batch):
  at_512 = budget.rule("bit_hyperrule", n_train=n, batch_size=512, image_size=28)
  b = budget.rule("bit_hyperrule", n_train=n, batch_size=batch, image_size=28)
  for mine, published in zip((b.warmup_steps, *b.lr_boundaries, b.steps),
                             (at_512.warmup_steps, *at_512.lr_boundaries, at_512.steps)):
    assert abs(mine * batch - published * 512) <= batch / 2  # exact where batch divides 512
  assert b.lr == pytest.approx(0.003 * batch / 512) and b.lr_scale == batch / 512
  assert b.mixup_alpha == at_512.mixup_alpha and b.resolution == at_512.resolution
  assert b.decay_fractions == pytest.approx(at_512.decay_fractions, abs=1e-3)


def test_bit_hyperrule_at_batch_16_in_numbers():
  b = budget.rule("bit_hyperrule", n_train=5_000, batch_size=16, image_size=28)
  assert (b.warmup_steps, b.lr_boundaries, b.steps) == (3200, (6400, 9600, 12_800), 16_000)
  assert b.steps * 16 == 500 * 512 and b.epochs == pytest.approx(51.2)
  assert b.decay_fractions == pytest.approx((0.4, 0.6, 0.8))
  assert b.lr == pytest.approx(9.375e-5)
  assert budget.rule("bit_hyperrule", n_train=50_000, batch_size=128,
                     image_size=32).decay_fractions == pytest.approx((0.3, 0.6, 0.9))


def test_bit_config_overrides_give_the_published_learning_rate_curve():
  b = budget.rule("bit_hyperrule", n_train=5_000, batch_size=128, image_size=32)
  cfg = config_lib.get_base_config()
  config_lib.apply_overrides(cfg, b.config_overrides().items(), "budget")  # every key exists
  assert (cfg.train.num_steps, cfg.data.image_size, cfg.data.mixup_alpha) == (2000, 128, 0.0)
  assert (cfg.optim.name, cfg.optim.momentum, cfg.optim.weight_decay) == ("momentum", 0.9, 0.0)
  sched = optim.make_schedule(cfg.optim, total_steps=cfg.train.num_steps)
  peak = 0.003 * 128 / 512
  # The published curve: linear warm-up to the first support, ÷10 past each middle one (checked
  # two steps off each boundary: jtransfer's staircase switches one step earlier).
  for step, want in [(0, 0.0), (200, peak / 2), (398, peak * 398 / 400), (402, peak),
                     (798, peak), (802, peak / 10), (1198, peak / 10), (1202, peak / 100),
                     (1598, peak / 100), (1602, peak / 1000), (1999, peak / 1000)]:
    assert float(sched(step)) == pytest.approx(want, rel=1e-5, abs=1e-12), step


def test_the_epochs_rule_floors_caps_and_says_when_capped():
  b = budget.rule("epochs", n_train=50, batch_size=16, image_size=96, epochs=15, min_steps=20,
                  max_steps=300)
  assert b.steps == 47 and b.epochs == pytest.approx(15.04) and not b.capped
  assert b.resolution == 96 and b.resize is None and b.mixup_alpha is None and b.lr is None
  assert b.as_row() == {"budget_rule": "epochs", "budget_steps": 47, "budget_epochs": 15.04,
                        "resolution": 96, "budget_capped": False}
  assert b.config_overrides() == {"train.num_steps": 47, "data.batch_size": 16,
                                  "data.image_size": 96}
  floored = budget.rule("epochs", n_train=10, batch_size=16, image_size=96, epochs=15,
                        min_steps=20)
  assert floored.steps == 20 and floored.epochs == pytest.approx(32.0) and not floored.capped
  big = budget.rule("epochs", n_train=2400, batch_size=16, image_size=96, epochs=15, max_steps=300)
  assert big.steps == 300 and big.capped and big.epochs == pytest.approx(2.0)
  assert big.as_row()["budget_capped"] is True
  exact = budget.rule("epochs", n_train=320, batch_size=16, image_size=96, epochs=15,
                      max_steps=300)
  assert exact.steps == 300 and not exact.capped  # 15 epochs fit exactly


def test_bad_rules_and_arguments_are_named():
  with pytest.raises(ValueError, match="unknown budget rule 'bit'.*bit_hyperrule"):
    budget.rule("bit", n_train=1, batch_size=1, image_size=1)
  with pytest.raises(ValueError, match="n_train"):
    budget.rule("epochs", n_train=0, batch_size=16, image_size=96, epochs=1)
  with pytest.raises(ValueError, match="batch_size"):
    budget.rule("bit_hyperrule", n_train=10, batch_size=2.5, image_size=96)
  with pytest.raises(ValueError, match="'epochs'.*'steps'.*epochs, min_steps, max_steps"):
    budget.rule("epochs", n_train=5, batch_size=16, image_size=96, epochs=1, steps=3)
  with pytest.raises(ValueError, match="'epochs'.*missing.*'epochs'"):
    budget.rule("epochs", n_train=5, batch_size=16, image_size=96)
  with pytest.raises(ValueError, match="'bit_hyperrule'.*'epochs'.*none"):
    budget.rule("bit_hyperrule", n_train=5, batch_size=16, image_size=96, epochs=3)
  with pytest.raises(ValueError, match=r"max_steps \(10\) is below min_steps \(20\)"):
    budget.rule("epochs", n_train=5, batch_size=16, image_size=96, epochs=1, min_steps=20,
                max_steps=10)
  with pytest.raises(ValueError, match="image_size"):
    budget.rule("bit_hyperrule", n_train=5, batch_size=16, image_size=(32, 32, 3))


def _curve(fn, n=80, every=10):
  return [(s, fn(s)) for s in range(every, n + 1, every)]


def test_convergence_flags_only_runs_whose_loss_and_validation_both_still_improve():
  n = 80
  falling = _curve(lambda s: 2.0 - s / 50)
  flat = _curve(lambda s: 0.5)
  rising_val = [(60, 0.60), (80, 0.70)]
  flat_val = [(60, 0.70), (80, 0.705)]
  both = budget.convergence(falling, rising_val, total_steps=n)
  assert both["flag"] is True and "still improving" in both["reason"]
  # the windows (50, 60] and (70, 80] hold the losses logged at 60 (0.8) and at 80 (0.4)
  assert both["loss_drop"] == pytest.approx(0.5)
  assert both["val_gain"] == pytest.approx(0.1)
  settled = budget.convergence(flat, flat_val, total_steps=n)
  assert settled["flag"] is False and settled["loss_drop"] == 0.0
  assert budget.convergence(flat, rising_val, total_steps=n)["flag"] is False
  assert budget.convergence(falling, flat_val, total_steps=n)["flag"] is False


def test_convergence_compares_the_75_percent_point_with_the_end_not_earlier_training():
  n = 80
  # Falls fast until step 50, flat after: the third quarter's mean would still be above the end.
  knee = _curve(lambda s: max(0.5, 3.0 - s / 20), every=5)
  assert budget.convergence(knee, [(60, 0.60), (80, 0.70)], total_steps=n)["flag"] is False
  # An evaluation before the third quarter is too far from the 75 % point to judge from.
  early_val = budget.convergence(_curve(lambda s: 2.0 - s / 50), [(30, 0.2), (80, 0.7)],
                                 total_steps=n)
  assert early_val["flag"] is None and "validation in steps (40, 60]" in early_val["reason"]


def test_convergence_says_none_when_too_few_points_were_logged():
  n = 80
  falling = _curve(lambda s: 2.0 - s / 50)
  out = budget.convergence(falling[-1:], [(60, 0.6), (80, 0.7)], total_steps=n)
  assert out["flag"] is None and "too few" in out["reason"] and "(50, 60]" in out["reason"]
  assert out["loss_drop"] is None and out["val_gain"] is None
  assert budget.convergence(falling, [(80, 0.7)], total_steps=n)["flag"] is None
  assert budget.convergence(falling, [(60, 0.7)], total_steps=n)["flag"] is None
  assert budget.convergence([], [], total_steps=2)["flag"] is None
  with pytest.raises(ValueError, match="last_fraction"):
    budget.convergence(falling, [], total_steps=n, last_fraction=0.8)


def _trainer_steps(n, log_every, eval_every):
  """The steps the trainer logs the training loss at, and evaluates at (``loop.Action``)."""
  evals = set(range(eval_every, n + 1, eval_every)) | {n}
  return sorted(set(range(log_every, n + 1, log_every)) | evals), sorted(evals)


@pytest.mark.parametrize("n", [8, 9, 10, 18, 20, 47, 100, 141, 188, 300, 1001])
def test_logging_plan_always_gives_the_check_its_points(n):
  log_every, eval_every = budget.logging_plan(n)
  assert eval_every <= 0.75 * n < eval_every + 1 and log_every == n // 8
  logs, evals = _trainer_steps(n, log_every, eval_every)
  out = budget.convergence([(s, 1.0) for s in logs], [(s, 0.5) for s in evals], total_steps=n)
  assert out["flag"] is False, out["reason"]


def test_logging_plan_does_not_evaluate_runs_too_short_to_judge():
  assert budget.logging_plan(2) == budget.logging_plan(7) == (1, 0)  # eval_every=0: at the end
  with pytest.raises(ValueError, match="total_steps"):
    budget.logging_plan(0)


def test_points_from_records_reads_the_writer_format(tmp_path):
  w = writers.MetricWriter(str(tmp_path), tensorboard=False)
  w.write(5, {"train/ce": 2.0, "train/loss": 2.0, "train/top1": 0.1, "train/img_per_s": 9.0})
  w.write(35, {"train/loss": 1.0})
  w.write(35, {"eval/loss": 1.2, "eval/top1": 0.5, "eval/ood/top1": 0.1,
               "eval/confusion_matrix": [[1, 0], [0, 1]]})
  w.write(40, {"train/loss": float("nan")})   # written as "nan": left out
  w.write(35, {"eval/top1": 0.55})            # a resumed run rewrites a step: the last one counts
  w.write(47, {"train/loss": 0.9})
  w.write(47, {"eval/top1": 0.6, "eval/loss": 1.1})
  records = wd.read_jsonl(wd.RunDir(str(tmp_path)).metrics)
  assert budget.points_from_records(records) == ([(5, 2.0), (35, 1.0), (47, 0.9)],
                                                 [(35, 0.55), (47, 0.6)])


def test_a_real_run_under_the_logging_plan_can_be_judged(tmp_path):
  n = 8
  log_every, eval_every = budget.logging_plan(n)
  config = testing.tiny_config(num_steps=n, log_every=log_every, eval_every=eval_every,
                               ckpt_every=0)
  trainer.train_and_evaluate(config, str(tmp_path), source=testing.tiny_source())
  loss, val = budget.points_from_records(wd.read_jsonl(wd.RunDir(str(tmp_path)).metrics))
  assert [s for s, _ in loss] == list(range(1, n + 1)) and [s for s, _ in val] == [6, 8]
  out = budget.convergence(loss, val, total_steps=n)
  assert out["flag"] in (True, False) and out["loss_drop"] is not None
