"""The LR schedule: constant, then linear decay to zero (SPEC "Training protocol")."""

import pytest
import torch

from cycleseg.core.steps import lr_factor


@pytest.mark.parametrize("epoch, expected", [(0, 1.0), (50, 1.0), (99, 1.0), (100, 1.0), (150, 0.5), (190, 0.1),
                                             (199, 0.01), (200, 0.0)])
def test_paper_schedule(epoch, expected):
    assert lr_factor(epoch, 200, 100) == pytest.approx(expected)


def test_schedule_drives_adam_lr_per_epoch():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=2e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: lr_factor(e, 10, 6))
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:7] == [pytest.approx(2e-4)] * 7
    assert lrs[7:] == [pytest.approx(2e-4 * f) for f in (3 / 4, 2 / 4, 1 / 4)]
