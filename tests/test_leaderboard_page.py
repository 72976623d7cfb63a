"""The leaderboard page in a real headless browser (Debian's chromium, driven by Playwright): it loads from disk,
aggregates repeated runs, sorts, filters, shows human units and each figure's definition, links to the runs, draws
interactive plots (hover, error bars, filters) and shows a model name that holds markup as text."""

import csv
import shutil
import urllib.parse
from pathlib import Path

import pytest
from conftest import HOSTILE_MODEL

from harness.cli import main

pytestmark = pytest.mark.slow


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no chromium on PATH: .ci/run installs Debian's (apt-get install chromium); this machine has none")


@pytest.fixture(scope="module")
def page(result_runs, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    out = tmp_path_factory.mktemp("leaderboard")
    assert main(["leaderboard", "build", *(str(result_runs[n]) for n in ("base", "same", "slowed")),
                 "--out", str(out)]) == 0
    lines = [line for path in out.glob("leaderboard-*.csv") for line in csv.DictReader(path.open(newline=""))]
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        tab = browser.new_page()
        problems = []
        tab.on("pageerror", lambda error: problems.append(str(error)))
        tab.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
        tab.on("request", lambda request: problems.append(request.url) if not request.url.startswith(
            ("file:", "data:")) else None)
        tab.goto((out / "index.html").as_uri())
        tab.wait_for_load_state("load")
        yield tab, lines, problems
        browser.close()


def _column(tab, name: str) -> list[str]:
    index = tab.eval_on_selector_all("#leaderboard th", "ths => ths.map(th => th.dataset.column)").index(name)
    return tab.eval_on_selector_all(f"#leaderboard tbody tr td:nth-child({index + 1})",
                                    "tds => tds.map(td => td.textContent)")


def test_page_loads_offline_with_every_line(page):
    tab, lines, problems = page
    assert tab.title() == "bench leaderboard"
    # Three runs: `base` and `same` are one configuration (one line of 2 runs); `slowed` has two models.
    assert len(tab.query_selector_all("#leaderboard tbody tr")) == len(lines) == 3
    assert sorted(_column(tab, "run_id")) == sorted(line["run_id"] for line in lines)
    assert sorted(_column(tab, "runs")) == ["1", "1", "2"]
    assert problems == []


def test_filters_keep_the_lines_of_one_value(page):
    tab, lines, _ = page
    dtypes = sorted({line["dtype"] for line in lines})
    assert len(dtypes) == 2  # the slowed run took the other dtype
    tab.select_option("#filters select[name=dtype]", dtypes[0])
    assert set(_column(tab, "dtype")) == {dtypes[0]}
    assert len(_column(tab, "dtype")) == sum(line["dtype"] == dtypes[0] for line in lines)
    tab.select_option("#filters select[name=dtype]", "")
    assert len(_column(tab, "dtype")) == len(lines)


def test_human_units_and_definitions_one_click_away(page):
    from harness.measure.metrics import METRICS

    tab, lines, _ = page
    total = int(float(lines[0]["total_params"]))  # tiny-dense: 4,065,536 parameters
    assert f"{total / 1e6:.3g}M" in _column(tab, "total_params")
    assert all(cell.endswith(" MiB") or cell.endswith(" GiB") for cell in _column(tab, "peak_rss_mib"))
    tab.click("#leaderboard th[data-column=decode_tok_s] a.definition")
    assert tab.evaluate("location.hash") == "#def-decode_tok_s"
    assert tab.text_content("#def-decode_tok_s + dd") == METRICS["decode_tok_s"].definition
    heading = tab.get_attribute("#leaderboard th[data-column=decode_tok_s]", "title")
    assert heading == METRICS["decode_tok_s"].definition


def test_sorting_by_a_column_orders_its_numbers(page):
    tab, lines, _ = page
    heading = tab.locator("#leaderboard th[data-column=decode_tok_s]")
    heading.click()
    ascending = [float(v) for v in _column(tab, "decode_tok_s")]
    assert ascending == sorted(ascending) and len(set(ascending)) > 1
    assert heading.get_attribute("aria-sort") == "ascending"
    heading.click()
    assert [float(v) for v in _column(tab, "decode_tok_s")] == sorted(ascending, reverse=True)


def _points(tab, plot: int) -> int:
    return tab.locator(".plot").nth(plot).locator(".point").count()


def _hover_texts(tab, plot: int) -> list[str]:
    """The hover label of each point of a plot, each point hovered in turn through plotly's own hover call (a
    mouse over one of two points that lie on top of each other shows only the nearer one's label)."""
    div = tab.locator(".plot").nth(plot)
    texts = []
    sizes = div.evaluate("gd => gd.data.map(trace => trace.mode === 'markers' ? trace.x.length : 0)")
    for curve, size in enumerate(sizes):
        for point in range(size):
            div.evaluate("(gd, at) => Plotly.Fx.hover(gd, [{curveNumber: at[0], pointNumber: at[1]}])",
                         [curve, point])
            tab.wait_for_timeout(150)
            texts += div.locator(".hoverlayer .hovertext").all_text_contents()
    return texts


def test_plots_are_interactive_and_follow_the_filters(page):
    tab, lines, problems = page
    titles = tab.eval_on_selector_all("figure figcaption", "cs => cs.map(c => c.textContent)")
    assert titles == ["Quality against decode speed", "MoE against dense: decode speed by parameters",
                      "Cost per million output tokens, per profile", "Decode speed against batch size"]
    # A plot without data says why instead of drawing an empty frame (a CPU profile has no price).
    assert tab.locator("figure p.none").all_text_contents() == [
        "no profile of these runs has a price per hour, so there is no cost figure"]
    # The MoE plot (every line has latency and parameter counts): a point per line, each with its hover label.
    assert _points(tab, 1) == len(lines) == 3
    hovered = _hover_texts(tab, 1)
    assert len(set(hovered)) == 3 and any("(2 runs)" in text for text in hovered)
    # Decode speed's 95% interval as error bars on the quality plot.
    assert tab.locator(".plot").nth(0).locator(".errorbar").count() >= 1
    dtypes = sorted({line["dtype"] for line in lines})
    tab.select_option("#filters select[name=dtype]", dtypes[0])
    assert _points(tab, 1) == sum(line["dtype"] == dtypes[0] for line in lines) < 3
    tab.select_option("#filters select[name=dtype]", "")
    assert _points(tab, 1) == 3 and problems == []


def test_run_ids_link_to_their_runs_summaries(page):
    tab, lines, _ = page
    links = tab.eval_on_selector_all("#leaderboard td a[href]", "as => as.map(a => [a.textContent, a.href])")
    assert sorted(run for run, _ in links) == sorted(run for line in lines for run in line["run_id"].split())
    for _, href in links:
        target = Path(urllib.parse.unquote(urllib.parse.urlparse(href).path))
        assert target.name == "summary.csv" and target.is_file(), href


def test_markup_in_a_model_name_is_shown_as_text(page):
    tab, _, _ = page
    assert HOSTILE_MODEL in _column(tab, "model")
    # In a plot's hover label too (filtered to that model: its point may sit on tiny-dense's).
    tab.select_option("#filters select[name=model]", HOSTILE_MODEL)
    [label] = _hover_texts(tab, 1)
    assert label.startswith(f"{HOSTILE_MODEL} ")
    tab.select_option("#filters select[name=model]", "")
    assert tab.query_selector_all("#leaderboard img") == []
    assert tab.title() == "bench leaderboard"  # its onerror never ran
