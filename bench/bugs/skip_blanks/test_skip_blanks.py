from module import skip_blanks


def test_at_end():
    assert skip_blanks([], 0) == 0


def test_skips_blank_lines():
    assert skip_blanks(["", "  ", "x"], 0) == 2
