"""Orca's ``checkpoint_trigger`` names. sparkorca's Estimators checkpoint every
epoch under ``model_dir``, which is what ``EveryEpoch()`` asked for."""


class EveryEpoch:
    def __repr__(self) -> str:
        return "EveryEpoch()"


__all__ = ["EveryEpoch"]
