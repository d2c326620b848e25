"""TaskData helpers of the job context."""
import torch

from harness.engine.job import TaskData, spread_rows


def test_recal_and_spread_rows_cover_every_class_of_a_class_ordered_split():
    """The splits keep source order (class by class for the ImageFolder CIFAR-10): a prefix is one
    class, evenly spaced rows are every class in proportion."""
    y = torch.arange(10).repeat_interleave(100)  # class-ordered, 100 images per class
    x = y.float().view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()
    data = TaskData(x, y, x, y, x[:10], y[:10])
    picked = data.recal_x(50)[:, 0, 0, 0].long()
    assert len(picked) == 50 and torch.equal(torch.bincount(picked, minlength=10), torch.full((10,), 5))
    assert set(x[:50, 0, 0, 0].long().tolist()) == {0}  # what the prefix used to give
    assert torch.equal(spread_rows(x, 5000), x)  # asking for more than there is: all of it
    assert torch.equal(spread_rows(x, 1000), x)
