def skip_blanks(lines, start):
    """Index of the first non-blank line at or after `start` (len(lines) if none)."""
    index = start
    while index < len(lines) and lines[index].strip():
        index += 1
    return index
