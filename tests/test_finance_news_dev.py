"""The frozen news-register development set (data/finance-news-dev) is well formed and as its README describes:
labels, topics, class shares, the two-company pairs, one sentence of 8-45 words per row. Reads the CSV only."""

import csv
import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

DEV_DIR = Path(__file__).resolve().parent.parent / "data" / "finance-news-dev"
LABELS = {"negative", "neutral", "positive"}
TOPICS = {"earnings", "guidance", "m&a", "legal", "rating", "macro", "costs", "operations", "capital", "management"}
# A sentence break inside the text: end punctuation, optional closing quote or bracket, space, then more text.
INNER_BREAK = re.compile(r"[.!?][\"')\]]?\s+\S")


@pytest.fixture(scope="module")
def rows():
    with open(DEV_DIR / "sentences.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["id", "text", "label", "topic", "company"]
        return list(reader)


@pytest.fixture(scope="module")
def pairs(rows):
    by_text = defaultdict(list)
    for row in rows:
        by_text[row["text"]].append(row)
    return [group for group in by_text.values() if len(group) > 1]


def test_ids_are_unique_integers_and_there_are_enough_rows(rows):
    ids = [int(row["id"]) for row in rows]
    assert len(set(ids)) == len(ids)
    assert len(rows) >= 150


def test_labels_and_topics_are_from_the_fixed_lists_and_every_topic_has_ten_rows(rows):
    assert {row["label"] for row in rows} <= LABELS
    topics = Counter(row["topic"] for row in rows)
    assert set(topics) == TOPICS
    assert min(topics.values()) >= 10, topics


def test_class_shares_are_roughly_balanced(rows):
    shares = {label: n / len(rows) for label, n in Counter(row["label"] for row in rows).items()}
    assert 0.25 <= shares["positive"] <= 0.45, shares
    assert 0.25 <= shares["negative"] <= 0.45, shares
    assert 0.20 <= shares["neutral"] <= 0.40, shares


def test_company_is_named_in_the_text_and_empty_only_for_macro(rows):
    for row in rows:
        if row["topic"] == "macro":
            assert row["company"] == "", row
        else:
            assert row["company"] and row["company"] in row["text"], row


def test_every_text_is_one_sentence_of_8_to_45_words(rows):
    for row in rows:
        text = row["text"]
        assert text == text.strip() and "\n" not in text, row
        assert 8 <= len(text.split()) <= 45, row
        assert text[-1] in ".!?", row
        assert not INNER_BREAK.search(text), row


def test_two_company_sentences_come_in_adjacent_pairs_with_opposite_labels(pairs):
    assert len(pairs) >= 10
    for first, second in pairs:
        assert abs(int(first["id"]) - int(second["id"])) == 1, first
        assert first["company"] != second["company"], first
        assert first["company"] in first["text"] and second["company"] in first["text"], first
        assert {first["label"], second["label"]} == {"positive", "negative"}, first
        assert first["topic"] == second["topic"], first


def test_no_other_text_repeats(rows):
    counts = Counter(row["text"].casefold() for row in rows)
    assert max(counts.values()) <= 2
    # a text that appears twice is exactly one of the two-company pairs (checked above), never a stray copy
    exact = Counter(row["text"] for row in rows)
    assert {t.casefold() for t, n in exact.items() if n == 2} == {t for t, n in counts.items() if n == 2}


def test_readme_counts_match_the_file(rows):
    readme = (DEV_DIR / "README.md").read_text(encoding="utf-8")
    labels = Counter(row["label"] for row in rows)
    total = f"| **all** | {labels['positive']} | {labels['negative']} | {labels['neutral']} | {len(rows)} |"
    assert total in readme
    for topic in TOPICS:
        topic_labels = Counter(row["label"] for row in rows if row["topic"] == topic)
        line = f"| {topic} | {topic_labels['positive']} | {topic_labels['negative']} | {topic_labels['neutral']} |"
        assert line in readme, line
