"""Every report unlearn writes or prints, in one place.

    format.py          numbers, cells, HTML escaping, the stylesheet (shared by all below)
    plots.py           the figures: training curves, before/after bars, compare's trade-off plot
    eval_report.py     `unlearn eval`: summary rows, examples, report.md, report.html
    ledger_report.py   its section "Earlier requests: has an old behaviour come back?"
    compare_report.py  `unlearn compare`: the table of methods, compare.md, compare.html
    terminal.py        the rich tables the commands print
    write.py           writing the files, each report whole or absent

Importing this package loads neither matplotlib nor torch: the figures import matplotlib when drawn.
"""

from unlearn.report.eval_report import summary_rows
from unlearn.report.format import fmt, fmt_change
from unlearn.report.write import FILES, add_audit_to_report, write_audit, write_compare, write_report, write_report_files

__all__ = ["FILES", "add_audit_to_report", "write_audit", "fmt", "fmt_change", "summary_rows", "write_compare", "write_report", "write_report_files"]
