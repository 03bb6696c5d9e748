"""The finance-sentiment store and daily index (apps.finance_sentiment.timeseries): the index's arithmetic against
numbers worked out by hand, with and without decay; the store's round trips, filters, idempotent puts, CSV export,
undated articles, a damaged file, and two connections at once. SQLite only, no models."""

import csv
import io
import sqlite3
import statistics
import threading
from datetime import date, datetime

import pytest

from apps.finance_sentiment import timeseries
from apps.finance_sentiment.timeseries import (
    CSV_COLUMNS,
    CompanyScore,
    DailyPoint,
    SentimentStore,
    SentimentStoreError,
    StoredArticle,
    article_key,
    company_index,
    daily_index,
    export_csv,
)

D1, D2, D4 = date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 4)
# Three days of mentions (day, score, confidence); day 3 has none, so day 4 is two days after day 2.
MENTIONS = [(D4, 0.2, 0.4), (D1, 0.6, 1.0), (D2, -0.4, 0.8), (D1, 0.0, 0.5)]


def close(point, day, count, mean, low, high):
    return point == DailyPoint(day, count, pytest.approx(mean, abs=1e-6), pytest.approx(low, abs=1e-6),
                               pytest.approx(high, abs=1e-6))


def test_daily_index_without_decay_matches_the_hand_computed_example():
    day1, day2, day4 = daily_index(MENTIONS)
    # Day 1: scores 0.6, 0.0 with weights 1.0, 0.5. Σw = 1.5, Σw² = 1.25, mean = 0.6 / 1.5 = 0.4.
    # effective n = 1.5² / 1.25 = 1.8; Σw(s - mean)² = 1.0 * 0.2² + 0.5 * 0.4² = 0.12;
    # variance = 0.12 / (Σw - Σw²/Σw) = 0.12 / (1.5 - 0.8333333) = 0.18; standard error = sqrt(0.18 / 1.8) = 0.3162278
    # band = 0.4 ± 1.96 * 0.3162278 = 0.4 ± 0.6198064 = [-0.2198064, 1.0198064] -> high clipped to 1.
    assert close(day1, D1, 2, 0.4, -0.2198064, 1.0)
    # Days 2 and 4: one mention each: the mean is its score, the band all that a score can be.
    assert close(day2, D2, 1, -0.4, -1.0, 1.0)
    assert close(day4, D4, 1, 0.2, -1.0, 1.0)


def test_daily_index_with_a_one_day_half_life_matches_the_hand_computed_example():
    day1, day2, day4 = daily_index(MENTIONS, half_life_days=1)
    # Day 1 has no earlier mentions: as without decay.
    assert close(day1, D1, 2, 0.4, -0.2198064, 1.0)
    # Day 2: day 1's weights halved. (0.6, 0.5), (0.0, 0.25), (-0.4, 0.8): Σw = 1.55, Σw² = 0.9525;
    # mean = (0.3 + 0 - 0.32) / 1.55 = -0.0129032; effective n = 1.55² / 0.9525 = 2.5223097;
    # Σw(s - mean)² = Σws² - Σw·mean² = (0.18 + 0.128) - 1.55 * 0.0129032² = 0.3077419;
    # variance = 0.3077419 / (1.55 - 0.9525 / 1.55) = 0.3077419 / 0.9354839 = 0.3289655;
    # standard error = sqrt(0.3289655 / 2.5223097) = 0.3611403; band = -0.0129032 ± 0.7078350.
    assert close(day2, D2, 1, -0.0129032, -0.7207383, 0.6949318)
    # Day 4: day 1's weights times 0.5³, day 2's times 0.5². (0.6, 0.125), (0.0, 0.0625), (-0.4, 0.2), (0.2, 0.4):
    # Σw = 0.7875, Σw² = 0.2195313; mean = (0.075 - 0.08 + 0.08) / 0.7875 = 0.0952381; effective n = 2.8249110;
    # Σw(s - mean)² = (0.045 + 0.032 + 0.016) - 0.7875 * 0.0952381² = 0.0858571;
    # variance = 0.0858571 / (0.7875 - 0.2195313 / 0.7875) = 0.1687676; standard error = 0.2444230;
    # band = 0.0952381 ± 0.4790691. The count stays that day's mentions.
    assert close(day4, D4, 1, 0.0952381, -0.3838310, 0.5743072)


def test_equal_weights_give_the_textbook_band():
    """All weights equal: mean ± 1.96 · sample stdev / sqrt(n), whatever the weight."""
    scores = [0.1, -0.3, 0.5, 0.2, 0.0]
    mean, half = statistics.mean(scores), 1.96 * statistics.stdev(scores) / len(scores) ** 0.5
    for weight in (1.0, 0.3):
        (point,) = daily_index([(D1, s, weight) for s in scores])
        assert close(point, D1, 5, mean, mean - half, mean + half)


def test_all_zero_weights_count_as_equal_weights():
    # (0.2, 0), (0.4, 0): mean 0.3; sample variance (0.1² + 0.1²) / 1 = 0.02; standard error sqrt(0.02 / 2) = 0.1.
    for half_life in (None, 2.0):
        (point,) = daily_index([(D1, 0.2, 0.0), (D1, 0.4, 0.0)], half_life)
        assert close(point, D1, 2, 0.3, 0.104, 0.496)
    # A zero weight beside non-zero ones counts for nothing.
    (point,) = daily_index([(D1, 0.2, 0.0), (D1, 0.4, 1.0)])
    assert close(point, D1, 2, 0.4, -1.0, 1.0)


def test_a_long_half_life_approaches_the_running_mean_and_a_long_gap_forgets():
    mean_so_far = (0.6 * 1.0 + 0.0 * 0.5 - 0.4 * 0.8) / (1.0 + 0.5 + 0.8)
    assert daily_index(MENTIONS, half_life_days=1e9)[1].mean == pytest.approx(mean_so_far)
    # 5000 half-lives later, the old mentions' weights have gone to zero: only the new one counts.
    later = date(2024 + 14, 1, 1)
    assert daily_index([*MENTIONS, (later, -0.7, 0.9)], half_life_days=1)[-1].mean == pytest.approx(-0.7)


@pytest.mark.parametrize("bad", [(D1, 1.5, 1.0), (D1, 0.0, -0.1), (D1, float("nan"), 1.0),
                                 (D1, 0.0, float("inf")), (datetime(2024, 3, 1, 9), 0.0, 1.0)])
def test_daily_index_refuses_bad_input(bad):
    with pytest.raises(ValueError):
        daily_index([bad])


def test_daily_index_refuses_a_half_life_that_is_not_positive():
    for half_life in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="half_life_days"):
            daily_index(MENTIONS, half_life)


def article(title, day, *companies, score=0.1, text="", url=""):
    scores = tuple(CompanyScore(name, s, c, 2) for name, s, c in companies)
    return StoredArticle(article_key(title, text or title, url), title, day, "wire", url, score, "neutral", scores)


@pytest.fixture
def store(tmp_path):
    with SentimentStore(tmp_path / "news.sqlite3") as store:
        yield store


def test_article_key_finds_the_same_article_read_again():
    key = article_key("Acme beats  estimates", "Acme rose 5%.\n", "https://News.example/a?id=3&utm_source=rss#top")
    assert key == article_key(" Acme beats estimates", "Acme rose 5%.", "https://news.example/a?id=3")
    assert len(key) == 64
    assert key != article_key("Acme beats estimates", "Acme rose 6%.", "https://news.example/a?id=3")
    assert key != article_key("Acme beats estimates", "Acme rose 5%.", "https://news.example/a?id=4")
    # The parts cannot run into each other.
    assert article_key("a", "b c") != article_key("a b", "c")


def test_the_default_store_lives_under_llmkit_home(tmp_path, monkeypatch):
    monkeypatch.setenv("LLMKIT_HOME", str(tmp_path / "home"))
    with SentimentStore() as store:
        assert store.path == tmp_path / "home" / "sentiment" / "news.sqlite3"
        assert store.path.exists()


def test_a_store_reopened_reads_back_what_was_put(tmp_path):
    path = tmp_path / "news.sqlite3"
    stored = article("Acme and Globex merge", D1, ("Acme", 0.5, 0.9), ("Globex", -0.25, 0.6), url="https://x/1")
    undated = article("Initech files", None, ("Initech", -0.5, 0.7))
    with SentimentStore(path) as store:
        store.put(stored, '{"sentences": [{"text": "Acme and Globex merge", "label": "positive"}]}')
        store.put(undated)
    with SentimentStore(path) as store:
        assert store.get(stored.key) == stored
        assert [c.company for c in store.get(stored.key).companies] == ["Acme", "Globex"]  # the order put
        assert store.details(stored.key) == '{"sentences": [{"text": "Acme and Globex merge", "label": "positive"}]}'
        assert store.get(undated.key) == undated and store.details(undated.key) == ""
        assert store.get("0" * 64) is None
        with pytest.raises(KeyError):
            store.details("0" * 64)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == timeseries.SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_put_is_idempotent_and_the_last_put_of_a_key_wins(store):
    first = article("Acme beats", D1, ("Acme", 0.5, 0.9), ("Globex", 0.1, 0.5))
    store.put(first, '{"v": 1}')
    store.put(first, '{"v": 1}')
    assert store.articles() == [first]
    assert store.companies() == [("Acme", 1), ("Globex", 1)]
    rescored = StoredArticle(first.key, first.title, D1, "wire", "", 0.3, "positive",
                             (CompanyScore("Acme", 0.7, 1.0, 3),))
    store.put(rescored, '{"v": 2}')
    assert store.articles() == [rescored] and store.details(first.key) == '{"v": 2}'
    assert store.companies() == [("Acme", 1)]


def test_put_refuses_details_that_are_not_json(store):
    with pytest.raises(ValueError):
        store.put(article("Acme beats", D1), "{not json")
    assert store.articles() == []


def test_articles_filter_by_company_and_date_and_keep_undated_ones_out_of_the_index(store):
    a1 = article("Acme one", D1, ("Acme", 0.6, 1.0), ("Globex", 0.0, 0.5))
    a2 = article("Acme two", D2, ("Acme", -0.4, 0.8))
    g4 = article("Globex four", D4, ("Globex", 0.2, 0.4))
    undated = article("Acme undated", None, ("Acme", 1.0, 1.0))
    for a in (undated, g4, a2, a1):
        store.put(a)
    assert store.articles() == [a1, a2, g4, undated]  # oldest first, undated last
    assert store.articles("Acme") == [a1, a2, undated]
    assert store.articles("Globex", start=D2) == [g4]
    assert store.articles(end=D2) == [a1, a2]  # a date range leaves undated articles out
    assert store.articles("Nobody") == []
    assert store.companies() == [("Acme", 3), ("Globex", 2)]
    # The undated mention (score 1.0) is in no day: Acme's index is its dated mentions only.
    acme = company_index(store, "Acme")
    assert acme == daily_index([(D1, 0.6, 1.0), (D2, -0.4, 0.8)])
    assert close(acme[0], D1, 1, 0.6, -1.0, 1.0)


def test_company_index_with_decay_carries_mentions_from_before_the_window(store):
    store.put(article("one", D1, ("Acme", 0.6, 1.0)))
    store.put(article("two", D1, ("Acme", 0.0, 0.5)))
    store.put(article("three", D2, ("Acme", -0.4, 0.8)))
    (day2,) = company_index(store, "Acme", start=D2, half_life_days=1)
    assert close(day2, D2, 1, -0.0129032, -0.7207383, 0.6949318)  # as in the hand-computed example
    (day2,) = company_index(store, "Acme", start=D2)
    assert close(day2, D2, 1, -0.4, -1.0, 1.0)


def test_export_csv_writes_one_row_per_company_per_day(store, tmp_path):
    store.put(article("Acme one", D1, ("Acme", 0.6, 1.0), ("=Globex", 0.0, 0.5)))
    store.put(article("Acme two", D1, ("Acme", 0.0, 0.5)))
    store.put(article("Acme three", D2, ("Acme", -0.4, 0.8)))
    store.put(article("Undated", None, ("Acme", 1.0, 1.0)))
    out = io.StringIO()
    export_csv(store, out)
    assert out.getvalue() == ("company,date,count,mean,low,high\n"
                              "Acme,2024-03-01,2,0.400000,-0.219806,1.000000\n"
                              "Acme,2024-03-02,1,-0.400000,-1.000000,1.000000\n"
                              "'=Globex,2024-03-01,1,0.000000,-1.000000,1.000000\n")  # a formula stays text
    path = tmp_path / "acme.csv"
    export_csv(store, path, companies=["Acme"], half_life_days=1)
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == list(CSV_COLUMNS)
    assert rows[1:] == [["Acme", "2024-03-01", "2", "0.400000", "-0.219806", "1.000000"],
                        ["Acme", "2024-03-02", "1", "-0.012903", "-0.720738", "0.694932"]]
    points = io.StringIO()
    export_csv({"Acme": company_index(store, "Acme", half_life_days=1)}, points)
    assert points.getvalue() == path.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="half_life_days"):
        export_csv({"Acme": []}, io.StringIO(), half_life_days=1)


def test_a_damaged_file_is_an_error_that_names_it(tmp_path):
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"not an sqlite file at all " * 200)
    with pytest.raises(SentimentStoreError, match="garbage.sqlite3 is not a readable SQLite file"):
        SentimentStore(garbage)
    # Readable header, damaged pages: found by the first read that reaches them.
    damaged = tmp_path / "damaged.sqlite3"
    with SentimentStore(damaged) as store:
        for i in range(300):
            store.put(article(f"article {i} " * 10, D1, ("Acme", 0.1, 0.5)))
    data = bytearray(damaged.read_bytes())
    data[4096:] = b"\xff" * (len(data) - 4096)  # every page but the first (the header and the schema)
    damaged.write_bytes(bytes(data))
    with SentimentStore(damaged) as store, pytest.raises(SentimentStoreError, match="damaged.sqlite3"):
        store.articles()


def test_another_programs_file_or_schema_version_is_refused(tmp_path):
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(SentimentStoreError, match="other.sqlite3 is an SQLite file of another program"):
        SentimentStore(other)
    newer = tmp_path / "newer.sqlite3"
    SentimentStore(newer).close()
    with sqlite3.connect(newer) as db:
        db.execute(f"PRAGMA user_version = {timeseries.SCHEMA_VERSION + 1}")
    with pytest.raises(SentimentStoreError, match="newer.sqlite3 is a sentiment store of schema version 2"):
        SentimentStore(newer)


def test_two_stores_on_one_file_write_from_two_threads_and_see_each_other(tmp_path):
    path = tmp_path / "news.sqlite3"
    stores = [SentimentStore(path), SentimentStore(path)]
    errors = []

    def write(store, name):
        try:
            for i in range(40):
                store.put(article(f"{name} {i}", D1, (name, 0.1, 0.5)))
        except Exception as e:  # reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=write, args=(s, n)) for s, n in zip(stores, ("Acme", "Globex"), strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for store in stores:
        assert sorted(store.companies()) == [("Acme", 40), ("Globex", 40)]
        store.close()


def test_a_reader_holding_a_transaction_does_not_block_a_writer(tmp_path, monkeypatch):
    """WAL: another connection in the middle of a read does not stop a put (in rollback-journal mode it would,
    until the busy timeout)."""
    monkeypatch.setattr(timeseries, "BUSY_SECONDS", 1.0)
    path = tmp_path / "news.sqlite3"
    with SentimentStore(path) as writer, SentimentStore(path) as other:
        writer.put(article("first", D1, ("Acme", 0.1, 0.5)))
        reader = sqlite3.connect(path, isolation_level=None)
        reader.execute("BEGIN")
        assert reader.execute("SELECT COUNT(*) FROM articles").fetchone()[0] == 1
        writer.put(article("second", D2, ("Acme", 0.2, 0.5)))
        assert reader.execute("SELECT COUNT(*) FROM articles").fetchone()[0] == 1  # its snapshot
        reader.execute("COMMIT")
        reader.close()
        assert [a.title for a in other.articles()] == ["first", "second"]
