from module import perimeter


def test_square():
    assert perimeter(2, 2) == 8


def test_rectangle():
    assert perimeter(3, 5) == 16
