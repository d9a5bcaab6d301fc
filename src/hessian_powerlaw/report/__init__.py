"""Figures (``plots``) and the self-contained HTML report (``html``).

Both work on plain data (numpy arrays, the dictionaries our JSON files hold) so that a report
can be rebuilt from the files alone, without the models that produced them.
"""

from __future__ import annotations

from hessian_powerlaw.report.html import write_report

__all__ = ["write_report"]
