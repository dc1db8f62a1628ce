"""`python -m workbench …`: the CLI, as launchers (torchrun, accelerate launch) start it."""

from workbench.cli import entry

entry()
