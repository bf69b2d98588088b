"""Budget rules (BiT-HyperRule's published numbers, the epochs floor and cap) and the convergence
flag on hand-made curves."""

import pytest

from jtransfer.benchmark import budget


@pytest.mark.parametrize("n,steps,boundaries,warmup,mixup", [
    (1_000, 500, (200, 300, 400), 100, 0.0),
    (19_999, 500, (200, 300, 400), 100, 0.0),
    (20_000, 10_000, (3000, 6000, 9000), 500, 0.1),
    (1_281_167, 20_000, (6000, 12_000, 18_000), 500, 0.1),
])
def test_bit_hyperrule_at_its_own_batch_is_the_published_rule(n, steps, boundaries, warmup, mixup):
  b = budget.rule("bit_hyperrule", n_train=n, batch_size=512, image_size=224)
  assert (b.steps, b.lr_boundaries, b.warmup_steps, b.mixup_alpha) == (steps, boundaries, warmup,
                                                                      mixup)
  assert (b.resize, b.resolution, b.lr_scale) == (512, 480, 1.0)


def test_bit_hyperrule_scaled_to_a_smaller_batch_keeps_the_examples_seen():
  b = budget.rule("bit_hyperrule", n_train=5_000, batch_size=16, image_size=28)
  assert b.steps * 16 == 500 * 512 and b.warmup_steps == 3200 and b.lr_scale == 16 / 512
  assert (b.resize, b.resolution) == (160, 128)  # 28 × 28 < 96 × 96
  assert budget.rule("bit_hyperrule", n_train=5_000, batch_size=16, image_size=96).resolution == 480


def test_the_epochs_rule_floors_caps_and_says_when_capped():
  b = budget.rule("epochs", n_train=50, batch_size=16, image_size=96, epochs=15, min_steps=20,
                  max_steps=300)
  assert b.steps == 47 and b.epochs == pytest.approx(15.04) and not b.capped
  assert budget.rule("epochs", n_train=10, batch_size=16, image_size=96, epochs=15,
                     min_steps=20).steps == 20
  big = budget.rule("epochs", n_train=2400, batch_size=16, image_size=96, epochs=15, max_steps=300)
  assert big.steps == 300 and big.capped and big.epochs == pytest.approx(2.0)
  assert big.as_row()["budget_capped"] is True


def test_bad_rules_and_arguments_are_named():
  with pytest.raises(ValueError, match="unknown budget rule 'bit'"):
    budget.rule("bit", n_train=1, batch_size=1, image_size=1)
  with pytest.raises(ValueError, match="n_train"):
    budget.rule("epochs", n_train=0, batch_size=16, image_size=96, epochs=1)
  with pytest.raises(ValueError, match="'epochs'.*unexpected"):
    budget.rule("epochs", n_train=5, batch_size=16, image_size=96, epochs=1, steps=3)


def _curve(fn, n=80, every=10):
  return [(s, fn(s)) for s in range(every, n + 1, every)]


def test_convergence_flags_only_runs_whose_loss_and_validation_both_still_improve():
  n = 80
  falling = _curve(lambda s: 2.0 - s / 50)
  flat = _curve(lambda s: 0.5)
  rising_val = [(60, 0.60), (80, 0.70)]
  flat_val = [(60, 0.70), (80, 0.703)]
  assert budget.convergence(falling, rising_val, total_steps=n)["flag"] is True
  assert budget.convergence(flat, rising_val, total_steps=n)["flag"] is False
  assert budget.convergence(falling, flat_val, total_steps=n)["flag"] is False
  out = budget.convergence(falling[-1:], rising_val, total_steps=n)
  assert out["flag"] is None and "too few" in out["reason"]
  assert budget.convergence(falling, [(80, 0.7)], total_steps=n)["flag"] is None


def test_logging_plan_gives_the_check_its_points_and_records_are_read():
  log_every, eval_every = budget.logging_plan(47)
  assert (log_every, eval_every) == (5, 35)
  records = [{"step": 5, "train/loss": 2.0, "train/top1": 0.1}, {"step": 35, "eval/top1": 0.5},
             {"step": 35, "train/loss": 1.0}, {"step": 47, "eval/top1": 0.6, "eval/loss": 1.1}]
  assert budget.points_from_records(records) == ([(5, 2.0), (35, 1.0)], [(35, 0.5), (47, 0.6)])
