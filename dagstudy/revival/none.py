"""``none``: leave dead neurons dead. The control for every revival idea."""

from __future__ import annotations

from dagstudy.revival.base import Policy


class NoRevival(Policy):
    id = "none"

    def after_pass(self, model, dead, variant, problem, epoch):
        return {}
