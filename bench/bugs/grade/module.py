def grade(score):
    if score > 90:
        return "A"
    if score >= 75:
        return "B"
    return "C"
