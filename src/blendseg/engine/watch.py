"""Signs that a run is not learning, said once each in plain words while it trains (a first run on new data that
cannot silently fail): batches without a single instance for many steps, and a loss that has not fallen after
the warm-up."""

from __future__ import annotations

import math

EMPTY_STEPS = 50  # steps in a row whose batches hold no instance
WINDOW = 50  # steps averaged at the start and after the warm-up


class LearningWatch:
    """Fed each step's instance count and total loss; :meth:`step` returns the warnings that step raises (each kind
    at most once a run)."""

    def __init__(self, warmup_iters: int) -> None:
        self.check_at = max(warmup_iters, WINDOW) + WINDOW  # the step whose last WINDOW losses are compared
        self.first: list[float] = []
        self.recent: list[float] = []
        self.empty = 0
        self.said: set[str] = set()

    def step(self, it: int, instances: int, loss: float) -> list[str]:
        out = []
        self.empty = self.empty + 1 if instances == 0 else 0
        if self.empty >= EMPTY_STEPS and "empty" not in self.said:
            self.said.add("empty")
            out.append(
                f"warning: {self.empty} steps in a row without a single instance in the batch: nothing to learn. "
                "Likely causes: objects left out by the resize or crop (smaller than a pixel, or outside the image), "
                "images without annotations (data.filter_empty), or labels that do not reach the images "
                "(blendseg data check)"
            )
        if not math.isfinite(loss):
            return out
        if 1 <= it <= WINDOW:  # step 0 excluded: its loss is the initialisation's
            self.first.append(loss)
        self.recent = (self.recent + [loss])[-WINDOW:]
        if it == self.check_at and "flat" not in self.said and self.first:
            start, now = sum(self.first) / len(self.first), sum(self.recent) / len(self.recent)
            if now >= 0.95 * start:
                self.said.add("flat")
                out.append(
                    f"warning: the loss has not fallen after the warm-up ({start:.3f} over steps 1-{len(self.first)}, "
                    f"{now:.3f} over the last {len(self.recent)} to step {it}). Likely causes: a learning rate too "
                    "high or too low for this batch (solver.base_lr), labels that do not match the images (look at "
                    "train_batch*.jpg), or objects too small for the input size (blendseg data check)"
                )
        return out
