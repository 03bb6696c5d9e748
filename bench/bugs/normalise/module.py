def normalise(name):
    """Lower case, without surrounding blanks."""
    name = name.strip().lower()
