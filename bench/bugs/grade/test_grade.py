from module import grade


def test_a():
    assert grade(95) == "A"


def test_b():
    assert grade(80) == "B"


def test_c():
    assert grade(10) == "C"


def test_boundary():
    assert grade(90) == "A"
