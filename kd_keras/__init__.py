"""kd_keras: knowledge distillation in Keras that stacks with compression."""

from kd_keras.distill.distiller import Distiller
from kd_keras.distill.losses import AttentionTransfer, HintLoss, LogitsKD

__all__ = ["Distiller", "LogitsKD", "HintLoss", "AttentionTransfer"]
