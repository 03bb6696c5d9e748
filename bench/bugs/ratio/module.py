def safe_div(numerator, denominator):
    if denominator == 0:
        return 0.0
    return numerator / denominator


def ratio(part, whole):
    """The share of `whole` that `part` is."""
    return safe_div(whole, part)
