"""Learning-rate schedules used by the published recipes, usable from LightningCLI configs."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

__all__ = ["HalvingLR"]


class HalvingLR(LRScheduler):
    """Exponential decay per epoch after a delay: ``lr_e = lr_0 * gamma ** max(0, e - delay)``.

    With ``delay=1, gamma=0.5`` (the defaults) this is Time-Series-Library's ``lradj='type1'``: the
    first two epochs at the base rate, then halved every epoch. Step it once per epoch.

    Args:
        optimizer: the wrapped optimiser.
        gamma: multiplicative decay per epoch.
        delay: epochs at the base rate before decay starts counting.
        last_epoch: index of the last epoch when resuming.
    """

    def __init__(
        self, optimizer: Optimizer, gamma: float = 0.5, delay: int = 1, last_epoch: int = -1
    ):
        if not 0 < gamma <= 1:
            raise ValueError(f"HalvingLR: gamma must be in (0, 1], got {gamma}")
        self.gamma, self.delay = gamma, delay
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        factor = self.gamma ** max(0, self.last_epoch - self.delay)
        return [base * factor for base in self.base_lrs]
