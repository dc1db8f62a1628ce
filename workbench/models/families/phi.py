"""`q_proj k_proj v_proj dense`: Phi(-1, -1.5, -2)."""

from workbench.models.families.separate_projections import SeparateProjectionsAdapter


class PhiAdapter(SeparateProjectionsAdapter):
    layout = "phi"
    NAMES = ("q_proj", "k_proj", "v_proj", "dense")
