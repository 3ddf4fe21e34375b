"""The run's plain warnings when it is not learning: each said once, with its likely causes, and never for a run
that learns."""

from blendseg.engine.watch import EMPTY_STEPS, WINDOW, LearningWatch


def _run(losses, instances=3, warmup=10):
    watch, said = LearningWatch(warmup), []
    for it, loss in enumerate(losses):
        said += watch.step(it, instances(it) if callable(instances) else instances, loss)
    return said


def test_a_flat_loss_after_the_warm_up_is_said_once():
    steps = max(10, WINDOW) + WINDOW + 100
    said = _run([2.0] * steps)
    assert len(said) == 1 and "has not fallen after the warm-up" in said[0] and "solver.base_lr" in said[0]
    assert _run([2.0 * 0.99**it for it in range(steps)]) == []  # a falling loss: nothing
    assert _run([float("nan")] + [2.0 * 0.99**it for it in range(steps)]) == []  # a skipped non-finite step


def test_batches_without_instances_for_many_steps_are_said_once():
    said = _run([1.0 / (it + 1) for it in range(3 * EMPTY_STEPS)], instances=lambda it: 0 if it >= 10 else 2)
    assert len(said) == 1 and f"{EMPTY_STEPS} steps in a row without a single instance" in said[0]
    gaps = _run([1.0 / (it + 1) for it in range(3 * EMPTY_STEPS)], instances=lambda it: it % EMPTY_STEPS == 0)
    assert gaps == []  # an instance now and then: not the sign
