from module import ratio, safe_div


def test_safe_div():
    assert safe_div(1, 0) == 0.0
    assert safe_div(6, 3) == 2


def test_ratio():
    assert ratio(1, 4) == 0.25
