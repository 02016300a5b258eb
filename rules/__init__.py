"""gradlint's rules, one module each, named after the rule (`unguarded_norm_division.py` is GL001)."""
