def validate(items):
    """One error per empty item."""
    errors = []
    for item in items:
        if not item:
            errors.append("empty")
            return errors
    return errors
