"""`q_proj k_proj v_proj out_proj`: OPT, GPT-J, GPT-Neo, BART-style attention."""

from workbench.models.families.separate_projections import SeparateProjectionsAdapter


class OutProjAdapter(SeparateProjectionsAdapter):
    layout = "opt"
    NAMES = ("q_proj", "k_proj", "v_proj", "out_proj")
