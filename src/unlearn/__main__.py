"""`python -m unlearn ...`: the command line, for launchers that start a module
(`accelerate launch -m unlearn run CONFIG`, `torchrun -m unlearn run CONFIG`)."""

from unlearn.cli import main

main()
