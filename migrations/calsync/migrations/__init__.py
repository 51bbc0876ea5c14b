"""`calsync migrate`: from the original server's JSON files, or from any backend to any backend.

legacy.py reads and checks the original files, snapshot.py reads a whole backend,
plan.py decides what each record becomes, report.py prints in the original script's
style, runner.py puts them together: plan, check, write, verify.
"""
