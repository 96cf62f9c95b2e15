"""The SE family and the residual blocks that take an SE position."""

from sebench.layers.se import (GATES, POSITIONS, SE_REGISTRY, SQUEEZES, VARIANT_HIDDEN, Gate, SEConfig,
                               SqueezeExcite, create_se, make_se_config, se_modules, set_se_form,
                               set_se_impl)

__all__ = ["GATES", "POSITIONS", "SE_REGISTRY", "SQUEEZES", "VARIANT_HIDDEN", "Gate", "SEConfig",
           "SqueezeExcite", "create_se", "make_se_config", "se_modules", "set_se_form",
           "set_se_impl"]
