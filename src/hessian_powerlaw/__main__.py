"""``python -m hessian_powerlaw`` (also what ``torchrun -m hessian_powerlaw`` runs)."""

from hessian_powerlaw.cli import main

raise SystemExit(main())
