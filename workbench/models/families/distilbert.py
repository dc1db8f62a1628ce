"""DistilBERT: `q_lin k_lin v_lin out_lin`, one K/V head per query head."""

from workbench.models.families.separate_projections import SeparateProjectionsAdapter


class DistilBertAdapter(SeparateProjectionsAdapter):
    layout = "distilbert"
    NAMES = ("q_lin", "k_lin", "v_lin", "out_lin")
